//go:build tools

// Package tools keeps helm's dependencies in go.mod; the binary is built with
// `go build helm.sh/helm/v3/cmd/helm`.
package tools

import (
	_ "helm.sh/helm/v3/pkg/action"
	_ "helm.sh/helm/v3/pkg/cli"
)
