// kstatus reads Kubernetes objects (a JSON list on stdin) and prints, for each, the
// status Flux and kpt compute with sigs.k8s.io/cli-utils/pkg/kstatus: one JSON line
// {"name", "kind", "status", "message"}. Used by the tests to prove the kinds' status.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	var items []map[string]interface{}
	data, err := io.ReadAll(os.Stdin)
	if err == nil {
		// apimachinery's JSON keeps integers int64, as unstructured objects need.
		err = utiljson.Unmarshal(data, &items)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus: stdin must be a JSON array of objects:", err)
		os.Exit(2)
	}
	out := json.NewEncoder(os.Stdout)
	for _, item := range items {
		obj := &unstructured.Unstructured{Object: item}
		result, err := status.Compute(obj)
		if err != nil {
			fmt.Fprintln(os.Stderr, "kstatus:", err)
			os.Exit(1)
		}
		_ = out.Encode(map[string]string{
			"name":    obj.GetName(),
			"kind":    obj.GetKind(),
			"status":  result.Status.String(),
			"message": result.Message,
		})
	}
}
