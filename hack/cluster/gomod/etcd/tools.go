//go:build tools

// Package tools keeps etcd's dependencies in go.mod; the binary is built with
// `go build go.etcd.io/etcd/server/v3` (its main package wraps etcdmain).
package tools

import _ "go.etcd.io/etcd/server/v3/etcdmain"
