// Command goref is the reference for tests/test_gojson_fast.py: it prints what Go's
// encoding/json writes for the values app/gojson.py claims to encode like Go.
//
// It reads a stream of JSON requests on stdin, {"indent": null or "<indent>", "doc": <wire>},
// and writes one line per request: {"out": "<json.Marshal or json.MarshalIndent(v, "", indent)>"}
// or {"err": "<the encoder's error>"}.
//
// <wire> is plain JSON except that every JSON object is a one-key tag object:
//
//	{"object": {"k": <wire>, ...}}  a Go map[string]any (encoding/json sorts its keys)
//	{"set": [<wire>, ...]}          a Rego set: an array in OPA's sorted order, as the
//	                                jsonformat built-in in opa/main.go prints it
//	{"float": "NaN"|"+Inf"|"-Inf"}  a float64 JSON cannot carry
//
// Numbers follow opa/main.go: an integer literal is an integer of any size (json.Number, written
// verbatim, as Go writes an int64, uint64 or big.Int), anything else is parsed into a float64
// (the test sends Python's repr, which round-trips exactly).
//
// One deliberate edit of Go's output: Go 1.22 and later escape U+0008 and U+000C as \b and \f,
// older Go as \u0008 and \u000c. Postee, whose output Herald reproduces, was built with Go
// before 1.22 (its Dockerfile: golang:1.17), so goref turns \b and \f back into the older
// escapes (preGo122Escapes); everything else is the installed Go's encoding/json as is.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"os"
	"regexp"
	"sort"
	"strconv"
)

var integerLiteral = regexp.MustCompile(`^-?[0-9]+$`)

type request struct {
	Indent *string `json:"indent"`
	Doc    any     `json:"doc"`
}

type response struct {
	Out *string `json:"out,omitempty"`
	Err string  `json:"err,omitempty"`
}

func number(text string) (any, error) {
	if integerLiteral.MatchString(text) {
		var i big.Int
		if _, ok := i.SetString(text, 10); !ok {
			return nil, fmt.Errorf("bad integer %s", text)
		}
		return json.Number(i.String()), nil
	}
	f, err := strconv.ParseFloat(text, 64)
	if err != nil {
		return nil, fmt.Errorf("number %s is not a float64: %w", text, err)
	}
	return f, nil
}

func toGo(x any) (any, error) {
	switch v := x.(type) {
	case nil, bool, string:
		return v, nil
	case json.Number:
		return number(string(v))
	case []any:
		out := make([]any, len(v))
		for i, item := range v {
			g, err := toGo(item)
			if err != nil {
				return nil, err
			}
			out[i] = g
		}
		return out, nil
	case map[string]any:
		if len(v) != 1 {
			return nil, fmt.Errorf("wire object must have exactly one tag, got %d keys", len(v))
		}
		for tag, body := range v {
			switch tag {
			case "object":
				m, ok := body.(map[string]any)
				if !ok {
					return nil, fmt.Errorf("object tag needs an object, got %T", body)
				}
				out := make(map[string]any, len(m))
				for k, item := range m {
					g, err := toGo(item)
					if err != nil {
						return nil, err
					}
					out[k] = g
				}
				return out, nil
			case "set":
				items, err := toGo(body)
				if err != nil {
					return nil, err
				}
				list, ok := items.([]any)
				if !ok {
					return nil, fmt.Errorf("set tag needs an array, got %T", body)
				}
				var cmpErr error
				sort.SliceStable(list, func(i, j int) bool {
					c, err := regoCompare(list[i], list[j])
					if err != nil && cmpErr == nil {
						cmpErr = err
					}
					return c < 0
				})
				return list, cmpErr
			case "float":
				switch body {
				case "NaN":
					return math.NaN(), nil
				case "+Inf":
					return math.Inf(1), nil
				case "-Inf":
					return math.Inf(-1), nil
				}
				return nil, fmt.Errorf("unknown float %v", body)
			}
			return nil, fmt.Errorf("unknown wire tag %q", tag)
		}
	}
	return nil, fmt.Errorf("cannot convert %T", x)
}

// regoRank is OPA's sort order of value types (ast.Compare): null < boolean < number < string
// < array < object. Objects never occur in the test's sets.
func regoRank(x any) int {
	switch x.(type) {
	case nil:
		return 0
	case bool:
		return 1
	case json.Number, float64:
		return 2
	case string:
		return 3
	case []any:
		return 6
	case map[string]any:
		return 7
	}
	return 99
}

func bigNumber(x any) *big.Float {
	f := new(big.Float).SetPrec(4096)
	switch v := x.(type) {
	case float64:
		f.SetFloat64(v)
	case json.Number:
		var i big.Int
		i.SetString(string(v), 10)
		f.SetInt(&i)
	}
	return f
}

// regoCompare orders two values as OPA's ast.Compare orders Rego values.
func regoCompare(a, b any) (int, error) {
	ra, rb := regoRank(a), regoRank(b)
	if ra == 99 || rb == 99 || ra == 7 || rb == 7 {
		return 0, fmt.Errorf("goref cannot order %T and %T in a set", a, b)
	}
	if ra != rb {
		if ra < rb {
			return -1, nil
		}
		return 1, nil
	}
	switch x := a.(type) {
	case nil:
		return 0, nil
	case bool:
		y := b.(bool)
		switch {
		case x == y:
			return 0, nil
		case !x:
			return -1, nil
		}
		return 1, nil
	case json.Number, float64:
		return bigNumber(a).Cmp(bigNumber(b)), nil
	case string:
		y := b.(string)
		switch {
		case x < y:
			return -1, nil
		case x > y:
			return 1, nil
		}
		return 0, nil
	case []any:
		y := b.([]any)
		for i := 0; i < len(x) && i < len(y); i++ {
			c, err := regoCompare(x[i], y[i])
			if err != nil || c != 0 {
				return c, err
			}
		}
		switch {
		case len(x) < len(y):
			return -1, nil
		case len(x) > len(y):
			return 1, nil
		}
		return 0, nil
	}
	return 0, fmt.Errorf("goref cannot order %T", a)
}

// preGo122Escapes rewrites the \b and \f escapes of encoding/json output into \u0008 and
// \u000c, as Go before 1.22 wrote them. Outside strings JSON text has no backslash, and inside
// one every backslash starts an escape, so stepping over escapes pairwise is exact (a literal
// backslash before a b, written \\b, stays).
func preGo122Escapes(b []byte) []byte {
	if !bytes.ContainsRune(b, '\\') {
		return b
	}
	out := make([]byte, 0, len(b)+16)
	for i := 0; i < len(b); i++ {
		if b[i] != '\\' || i+1 == len(b) {
			out = append(out, b[i])
			continue
		}
		switch b[i+1] {
		case 'b':
			out = append(out, `\u0008`...)
		case 'f':
			out = append(out, `\u000c`...)
		default:
			out = append(out, b[i], b[i+1])
		}
		i++
	}
	return out
}

func run(in io.Reader, w io.Writer) error {
	dec := json.NewDecoder(in)
	dec.UseNumber()
	enc := json.NewEncoder(w)
	for {
		var req request
		if err := dec.Decode(&req); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("reading a request: %w", err)
		}
		v, err := toGo(req.Doc)
		if err != nil {
			return fmt.Errorf("converting a request: %w", err)
		}
		var b []byte
		if req.Indent == nil {
			b, err = json.Marshal(v)
		} else {
			b, err = json.MarshalIndent(v, "", *req.Indent)
		}
		resp := response{}
		if err != nil {
			resp.Err = err.Error()
		} else {
			s := string(preGo122Escapes(b))
			resp.Out = &s
		}
		if err := enc.Encode(resp); err != nil {
			return err
		}
	}
}

func main() {
	w := bufio.NewWriterSize(os.Stdout, 1<<20)
	err := run(bufio.NewReaderSize(os.Stdin, 1<<20), w)
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "goref:", err)
		os.Exit(1)
	}
}
