//! The four platforms, each in its own folder with its API client, simulator and mapping, and
//! what builds their clients ([`Connectors`], handed to the core as a
//! [`Connector`](crate::core::seam::Connector)). The seam's types live in the core
//! ([`crate::core::seam`], [`crate::core::drivers`]); platforms depend on the core, never the
//! other way round.

pub mod codemanager;
pub mod codesphere;
pub mod devopness;
pub mod http;
pub mod listing;
pub mod spheron;

use crate::api::PlatformType;
use crate::core::seam::{Connection, Connector, Platform, PlatformError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A platform client and the fingerprint of what it was built from.
type Built = (u64, Arc<dyn Platform>);

/// The four platforms as the core sees them: clients built per connection, and kept per
/// provider until what they were built from changes (the provider's spec, its Secret's value
/// or its CA), so a rotated credential is used at once.
#[derive(Default)]
pub struct Connectors {
    built: Mutex<HashMap<String, Built>>,
}

impl Connectors {
    fn built(&self) -> std::sync::MutexGuard<'_, HashMap<String, Built>> {
        self.built.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Connector for Connectors {
    fn default_endpoint(&self, platform: PlatformType) -> Option<&'static str> {
        match platform {
            PlatformType::Codesphere => Some("https://cloud.codesphere.com/api"),
            PlatformType::Devopness => Some("https://api.devopness.com"),
            PlatformType::Spheron => Some("https://api-v2.spheron.network"),
            // Code Manager runs on the customer's own primary server: there is no public URL.
            PlatformType::PuppetCodeManager => None,
        }
    }

    fn default_requests_per_minute(&self, platform: PlatformType) -> u32 {
        match platform {
            // Devopness documents 30 requests a minute on the free plan.
            PlatformType::Devopness => 30,
            _ => 300,
        }
    }

    fn connect(&self, connection: Connection) -> Result<Arc<dyn Platform>, PlatformError> {
        Ok(match connection.platform {
            PlatformType::Codesphere => Arc::new(codesphere::Codesphere::new(connection)?),
            PlatformType::PuppetCodeManager => {
                Arc::new(codemanager::client::CodeManager::new(connection)?)
            }
            PlatformType::Devopness => Arc::new(devopness::client::Devopness::new(connection)?),
            PlatformType::Spheron => Arc::new(spheron::client::SpheronClient::new(connection)?),
        })
    }

    fn cached(&self, key: &str, fingerprint: u64) -> Option<Arc<dyn Platform>> {
        self.built()
            .get(key)
            .filter(|(f, _)| *f == fingerprint)
            .map(|(_, p)| p.clone())
    }

    fn last(&self, key: &str) -> Option<Arc<dyn Platform>> {
        self.built().get(key).map(|(_, p)| p.clone())
    }

    fn remember(&self, key: &str, fingerprint: u64, platform: Arc<dyn Platform>) {
        self.built()
            .insert(key.to_string(), (fingerprint, platform));
    }
}
