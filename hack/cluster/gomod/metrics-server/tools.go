//go:build tools

// Package tools keeps metrics-server's dependencies in go.mod; the binary is
// built with `go build sigs.k8s.io/metrics-server/cmd/metrics-server`.
package tools

import _ "sigs.k8s.io/metrics-server/cmd/metrics-server/app"
