package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// etchaConfig is an etcha config taking its keys from keys.json.
const etchaConfig = `local keys = import 'keys.json';
{
  build: { signingKey: keys.privateKey },
  run: { verifyKeys: [keys.publicKey] },
  exec: { command: '/bin/sh -c' },
}
`

// etchaRender: `etcha render <jwt>` of a signed 100-command pattern (verify
// + render, in a new process, as a user runs it), against `etcha version`
// with the same config (the process start it cannot avoid). Samples
// alternate the two.
func etchaRender(ctx context.Context, e *env, cfg config, _ []row) ([]row, error) {
	dir := filepath.Join(e.dir, "etcha-work")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	keys, err := e.etchaRun(ctx, dir, "generate-keys")
	if err != nil {
		return nil, err
	}
	var cmds []string
	for i := range 100 {
		cmds = append(cmds, fmt.Sprintf(
			"    {id: 'command %[1]d', check: 'test -f /tmp/f%[1]d', change: 'touch /tmp/f%[1]d', remove: 'rm /tmp/f%[1]d'},", i))
	}
	for name, text := range map[string]string{
		"keys.json":     string(keys),
		"etcha.jsonnet": etchaConfig,
		"p.jsonnet":     "{\n  run: [\n" + strings.Join(cmds, "\n") + "\n  ],\n}\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			return nil, err
		}
	}
	if _, err := e.etchaRun(ctx, dir, "-c", "etcha.jsonnet", "build", "p.jsonnet", "p.jwt"); err != nil {
		return nil, err
	}
	var start, render []float64
	for range cfg.n {
		began := time.Now()
		if _, err := e.etchaRun(ctx, dir, "-c", "etcha.jsonnet", "-l", "none", "version"); err != nil {
			return nil, err
		}
		start = append(start, ms(time.Since(began)))
		began = time.Now()
		out, err := e.etchaRun(ctx, dir, "-c", "etcha.jsonnet", "-l", "none", "render", "p.jwt")
		if err != nil {
			return nil, err
		}
		render = append(render, ms(time.Since(began)))
		var p struct{ Run []json.RawMessage }
		if err := json.Unmarshal(out, &p); err != nil || len(p.Run) != 100 {
			return nil, fmt.Errorf("etcha render printed %d commands (%v), want 100", len(p.Run), err)
		}
	}
	ref := dist("etcha version (process start)", "ms", start)
	return []row{ref, dist("etcha render, 100-command JWT (verify + render)", "ms", render).withRatio(ref)}, nil
}

// etchaRun runs the etcha binary in dir and returns its stdout.
func (e *env) etchaRun(ctx context.Context, dir string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, waitLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.etcha, args...)
	cmd.Dir = dir
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("etcha %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}
