// Renders a Helm chart as `helm template` does, for the parts of Helm's template engine the
// Cairn chart uses: Go's text/template with the sprig functions (as Helm, less env and
// expandenv), Helm's include, toYaml and required, the built-in objects .Values (values.yaml,
// then each -f file merged over it), .Release, .Chart and .Template, named templates shared
// by every file, and files starting with "_" rendering nothing. No Helm binary can be installed
// where Cairn is tested (none is packaged by Debian or PyPI), so this stands in for it.
//
//	render [-f values.yaml]... [-name RELEASE] [-namespace NS] CHART_DIR
//
// It prints every rendered object as YAML documents, each headed by its source file, and
// fails on any template error.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	"gopkg.in/yaml.v3"
)

type files []string

func (f *files) String() string     { return strings.Join(*f, ",") }
func (f *files) Set(v string) error { *f = append(*f, v); return nil }

// merge lays src over dst as Helm merges values files: maps merge key by key, anything else
// is replaced.
func merge(dst, src map[string]interface{}) map[string]interface{} {
	for k, v := range src {
		if sm, ok := v.(map[string]interface{}); ok {
			if dm, ok := dst[k].(map[string]interface{}); ok {
				dst[k] = merge(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
	return dst
}

func readYAML(path string) map[string]interface{} {
	data, err := os.ReadFile(path)
	if err != nil {
		fail("%v", err)
	}
	out := map[string]interface{}{}
	if err := yaml.Unmarshal(data, &out); err != nil {
		fail("%s: %v", path, err)
	}
	return out
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "render: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	var valueFiles files
	flag.Var(&valueFiles, "f", "a values file merged over the chart's (repeatable)")
	name := flag.String("name", "cairn", "the release name")
	namespace := flag.String("namespace", "default", "the release namespace")
	flag.Parse()
	if flag.NArg() != 1 {
		fail("usage: render [-f values.yaml]... [-name RELEASE] [-namespace NS] CHART_DIR")
	}
	dir := flag.Arg(0)
	chart := readYAML(filepath.Join(dir, "Chart.yaml"))
	values := readYAML(filepath.Join(dir, "values.yaml"))
	for _, f := range valueFiles {
		values = merge(values, readYAML(f))
	}
	chartName, _ := chart["name"].(string)

	root := template.New("root").Option("missingkey=error")
	funcs := sprig.TxtFuncMap()
	delete(funcs, "env")
	delete(funcs, "expandenv")
	funcs["include"] = func(name string, data interface{}) (string, error) {
		var out bytes.Buffer
		err := root.ExecuteTemplate(&out, name, data)
		return out.String(), err
	}
	funcs["toYaml"] = func(v interface{}) string {
		var out bytes.Buffer
		enc := yaml.NewEncoder(&out)
		enc.SetIndent(2)
		if err := enc.Encode(v); err != nil {
			return ""
		}
		return strings.TrimSuffix(out.String(), "\n")
	}
	funcs["required"] = func(message string, v interface{}) (interface{}, error) {
		if v == nil || v == "" {
			return nil, fmt.Errorf("%s", message)
		}
		return v, nil
	}
	root.Funcs(funcs)

	paths, err := filepath.Glob(filepath.Join(dir, "templates", "*"))
	if err != nil {
		fail("%v", err)
	}
	sort.Strings(paths)
	base := chartName + "/templates"
	for _, path := range paths {
		text, err := os.ReadFile(path)
		if err != nil {
			fail("%v", err)
		}
		if _, err := root.New(base + "/" + filepath.Base(path)).Parse(string(text)); err != nil {
			fail("%v", err)
		}
	}
	data := map[string]interface{}{
		"Values": values,
		"Release": map[string]interface{}{
			"Name": *name, "Namespace": *namespace, "Service": "Helm",
			"IsInstall": true, "IsUpgrade": false, "Revision": 1,
		},
		"Chart": map[string]interface{}{
			"Name": chartName, "Version": chart["version"], "AppVersion": chart["appVersion"],
		},
	}
	for _, path := range paths {
		file := filepath.Base(path)
		if strings.HasPrefix(file, "_") {
			continue
		}
		data["Template"] = map[string]interface{}{"Name": base + "/" + file, "BasePath": base}
		var out bytes.Buffer
		if err := root.ExecuteTemplate(&out, base+"/"+file, data); err != nil {
			fail("%v", err)
		}
		for _, doc := range strings.Split(out.String(), "\n---") {
			if strings.TrimSpace(strings.Trim(doc, "-")) == "" || isComments(doc) {
				continue
			}
			fmt.Printf("---\n# Source: %s/%s\n%s\n", base, file, strings.TrimLeft(doc, "-\n"))
		}
	}
}

// isComments says whether a document holds nothing but comments and blank lines.
func isComments(doc string) bool {
	for _, line := range strings.Split(doc, "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") && line != "---" {
			return false
		}
	}
	return true
}
