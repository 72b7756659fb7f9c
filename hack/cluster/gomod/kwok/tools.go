//go:build tools

// Package tools keeps kwok's dependencies in go.mod; the binary is built with
// `go build sigs.k8s.io/kwok/cmd/kwok`.
package tools

import (
	_ "sigs.k8s.io/kwok/pkg/config"
	_ "sigs.k8s.io/kwok/pkg/kwok/cmd"
	_ "sigs.k8s.io/kwok/pkg/log"
	_ "sigs.k8s.io/kwok/pkg/utils/signals"
)
