package nq_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// helperReportPrefix starts each line a helper process reports on its standard output (the
// testing package prints its own lines there too).
const helperReportPrefix = "nq-helper-report: "

// helperSpec says which helper process to start: this test binary re-executed to run only one
// TestHelperProcess* test, with its plan (JSON) in an environment variable.
type helperSpec struct {
	name     string        // what the messages call it
	test     string        // the helper test to run
	env      string        // the environment variable that carries the plan
	plan     any           // marshalled to JSON
	deadline time.Duration // the child's own bound; it is killed 30 s after
	// lowPriority runs the child at nice 19 (inherited by all its threads): it gets the cores
	// the parent leaves idle.
	lowPriority bool
}

// helperProcess is the parent's handle on a helper process. The child takes commands on its
// standard input, one a line, and answers each with one JSON report; every report has an Err
// field, set when the command failed.
type helperProcess struct {
	t       *testing.T
	name    string
	stdin   io.WriteCloser
	reports chan []byte // closed when the process's output ends
	exited  chan error  // the process's exit, after its output ended

	mu     sync.Mutex
	output []string // what the process printed besides reports (the testing package's lines)
}

// startHelper starts the helper process and decodes its first report (ready) into ready. The
// process is killed if it outlives the test (its input is closed first, then it has 10 s to
// exit).
func startHelper(t *testing.T, s helperSpec, ready any) *helperProcess {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("%s process: %v", s.name, err)
	}
	spec, err := json.Marshal(s.plan)
	if err != nil {
		t.Fatal(err)
	}
	pctx, kill := context.WithTimeout(context.Background(), s.deadline+30*time.Second)
	args := []string{exe, "-test.run=^" + s.test + "$", "-test.count=1",
		"-test.timeout=" + (s.deadline + 20*time.Second).String()}
	if s.lowPriority {
		if nice, err := exec.LookPath("nice"); err == nil {
			args = append([]string{nice, "-n", "19"}, args...)
		} else {
			t.Logf("no nice(1) (%v): the %s process runs at the parent's priority", err, s.name)
		}
	}
	cmd := exec.CommandContext(pctx, args[0], args[1:]...)
	cmd.Env = append(os.Environ(), s.env+"="+string(spec))
	cmd.WaitDelay = 5 * time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		kill()
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		kill()
		t.Fatal(err)
	}
	h := &helperProcess{t: t, name: s.name, stdin: stdin, reports: make(chan []byte, 1), exited: make(chan error, 1)}
	cmd.Stderr = &lineWriter{h: h}
	if err := cmd.Start(); err != nil {
		kill()
		t.Fatalf("%s process: %v", s.name, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			line := sc.Text()
			if rest, ok := strings.CutPrefix(line, helperReportPrefix); ok {
				h.reports <- []byte(rest)
				continue
			}
			h.addOutput(line)
		}
		close(h.reports)
		h.exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		stdin.Close() // the process exits at the end of its input
		deadline := time.AfterFunc(10*time.Second, kill)
		for range h.reports { // drain what it still says
		}
		<-h.exited
		deadline.Stop()
		kill()
	})
	h.receive(pctx, "ready", ready)
	return h
}

// call sends one command and decodes its report into out; any failure fails the test.
func (h *helperProcess) call(ctx context.Context, command string, out any) {
	h.t.Helper()
	if _, err := io.WriteString(h.stdin, command+"\n"); err != nil {
		h.t.Fatalf("%s %q: %v (output: %s)", h.name, command, err, h.outputText())
	}
	h.receive(ctx, command, out)
}

func (h *helperProcess) receive(ctx context.Context, what string, out any) {
	h.t.Helper()
	select {
	case r, ok := <-h.reports:
		if !ok {
			h.t.Fatalf("%s process ended before reporting %q: %v\n%s", h.name, what, <-h.exited, h.outputText())
		}
		var failed struct{ Err string }
		if err := json.Unmarshal(r, &failed); err != nil {
			h.t.Fatalf("%s %q: bad report %q: %v", h.name, what, r, err)
		}
		if failed.Err != "" {
			h.t.Fatalf("%s %q: %s", h.name, what, failed.Err)
		}
		if out != nil {
			if err := json.Unmarshal(r, out); err != nil {
				h.t.Fatalf("%s %q: bad report %q: %v", h.name, what, r, err)
			}
		}
	case <-ctx.Done():
		h.t.Fatalf("%s %q: %v (output: %s)", h.name, what, ctx.Err(), h.outputText())
	}
}

func (h *helperProcess) addOutput(line string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.output) < 200 {
		h.output = append(h.output, line)
	}
}

func (h *helperProcess) outputText() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return strings.Join(h.output, "\n")
}

// lineWriter keeps what a helper process writes to its standard error.
type lineWriter struct{ h *helperProcess }

func (w *lineWriter) Write(p []byte) (int, error) {
	for line := range strings.Lines(string(p)) {
		w.h.addOutput(strings.TrimRight(line, "\n"))
	}
	return len(p), nil
}

// helperChild is the child's side of a helper process: its plan, the commands from its
// standard input, and its reports.
type helperChild struct {
	ctx      context.Context
	commands <-chan string // closed at the end of the input
}

// startHelperChild reads the plan from env into plan; it returns false (and skips the test)
// when env is unset, i.e. when the helper test runs as a test of its own. The context ends after
// deadline(plan).
func startHelperChild(t *testing.T, env string, plan any, deadline func() time.Duration) (*helperChild, bool) {
	spec := os.Getenv(env)
	if spec == "" {
		t.Skipf("a helper process of another test; runs only as its child (with %s set)", env)
		return nil, false
	}
	if err := json.Unmarshal([]byte(spec), plan); err != nil {
		t.Fatalf("%s: %v", env, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline())
	t.Cleanup(cancel)
	commands := make(chan string)
	go func() {
		defer close(commands)
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			select {
			case commands <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
	return &helperChild{ctx: ctx, commands: commands}, true
}

// report prints one report line; v must marshal to a JSON object (with an Err field for
// failures).
func (c *helperChild) report(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(struct{ Err string }{err.Error()})
	}
	fmt.Printf("%s%s\n", helperReportPrefix, b)
}

// next returns the next command, or false at the end of the input or the deadline.
func (c *helperChild) next() (string, bool) {
	select {
	case command, ok := <-c.commands:
		return command, ok
	case <-c.ctx.Done():
		return "", false
	}
}
