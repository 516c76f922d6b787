// The upstream etcd entry point (server/main.go), built from the go.etcd.io/etcd/server/v3
// module at the version kube-apiserver is tested with.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
