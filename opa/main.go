// Command opa is the stock OPA command line with one extra built-in, jsonformat, so that
// Postee templates (which call jsonformat) evaluate on an OPA server exactly as in Postee.
//
// jsonformat(x) returns Go's json.MarshalIndent(x, "", " "): one-space indent, object keys
// sorted, and <, >, & escaped as \u003c, \u003e, \u0026 (encoding/json's HTML escaping).
// Numbers are re-encoded the way Herald's embedded engine and app/gojson.py see them:
// integer literals stay integers, anything else goes through float64 (so 1.50 -> 1.5,
// 1e3 -> 1000), which is what Go's encoder prints for the float64 values Postee decoded.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"regexp"
	"strconv"

	"github.com/open-policy-agent/opa/cmd"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/types"
)

var integerLiteral = regexp.MustCompile(`^-?[0-9]+$`)

// toGo converts a Rego value to the Go value encoding/json should print for it.
func toGo(v ast.Value) (any, error) {
	switch x := v.(type) {
	case ast.Null:
		return nil, nil
	case ast.Boolean:
		return bool(x), nil
	case ast.String:
		return string(x), nil
	case ast.Number:
		return number(string(x))
	case *ast.Array:
		out := make([]any, 0, x.Len())
		for i := 0; i < x.Len(); i++ {
			item, err := toGo(x.Elem(i).Value)
			if err != nil {
				return nil, err
			}
			out = append(out, item)
		}
		return out, nil
	case ast.Set:
		// a set prints as an array in OPA's own sorted order, as ast.JSON does
		return toGo(x.Sorted())
	case ast.Object:
		out := make(map[string]any, x.Len())
		var err error
		x.Foreach(func(k, val *ast.Term) {
			if err != nil {
				return
			}
			key := k.Value.String() // non-string keys print as their Rego text (1, true)
			if s, ok := k.Value.(ast.String); ok {
				key = string(s)
			}
			out[key], err = toGo(val.Value)
		})
		return out, err
	}
	return nil, fmt.Errorf("jsonformat: cannot encode %v (%T)", v, v)
}

func number(text string) (any, error) {
	if integerLiteral.MatchString(text) {
		var i big.Int
		if _, ok := i.SetString(text, 10); ok {
			return json.Number(i.String()), nil
		}
	}
	f, err := strconv.ParseFloat(text, 64)
	if err != nil {
		return nil, fmt.Errorf("jsonformat: number %s does not fit a float64: %w", text, err)
	}
	return f, nil
}

func jsonformat(_ rego.BuiltinContext, a *ast.Term) (*ast.Term, error) {
	v, err := toGo(a.Value)
	if err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		return nil, fmt.Errorf("jsonformat: %w", err)
	}
	return ast.StringTerm(string(b)), nil
}

func main() {
	rego.RegisterBuiltin1(&rego.Function{
		Name:        "jsonformat",
		Description: "Postee's jsonformat: json.MarshalIndent(x, \"\", \" \") with sorted keys and HTML escaping.",
		Decl:        types.NewFunction(types.Args(types.A), types.S),
	}, jsonformat)

	if err := cmd.RootCommand.Execute(); err != nil {
		var exitErr *cmd.ExitError
		if errors.As(err, &exitErr) {
			os.Exit(exitErr.Exit)
		}
		os.Exit(1)
	}
}
