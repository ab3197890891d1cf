package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	// readyTimeout bounds a child's setup (AF_XDP bind retries included).
	readyTimeout = 20 * time.Second
	// replyTimeout bounds the answer to a command that does not send for a while.
	replyTimeout = 10 * time.Second
	// quitTimeout bounds a child's exit after "quit" before it is killed.
	quitTimeout = 5 * time.Second
	// noteWord starts lines a child prints for the report ("note <text>").
	noteWord = "note"
)

// child is a sender or receiver process running in a namespace, pinned to a core, driven by
// the line protocol of proto.go.
type child struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string   // stdout lines; closed at EOF
	exit  chan struct{} // closed when the process has been waited for
	err   error         // Wait's result, valid after exit is closed
	notes func(string)
}

// startChild starts this program with args as a child in namespace ns, pinned to cpu with
// taskset, and waits for its "ready" line. notes receives the "note" lines it prints.
func startChild(ctx context.Context, name, ns string, cpu int, args []string, notes func(string)) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("pps: start %s: find own executable: %w", name, err)
	}
	argv := append([]string{"netns", "exec", ns, "taskset", "-c", strconv.Itoa(cpu), exe}, args...)
	cmd := exec.Command("ip", argv...)
	// Own process group (a terminal's ^C reaches only the parent, which shuts children down in
	// order) and killed if the parent dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = &prefixWriter{w: os.Stderr, prefix: "[" + name + "] "}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("pps: start %s: %w", name, err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("pps: start %s: %w", name, err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("pps: start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, stdin: stdin, lines: make(chan string, 16), exit: make(chan struct{}), notes: notes}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
		c.err = cmd.Wait()
		close(c.exit)
	}()
	line, err := c.expect(ctx, readyTimeout)
	if err == nil && line != msgReady {
		_, err = parseReply(line, msgReady, 0)
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("pps: start %s: %w", name, err), c.close())
	}
	return c, nil
}

// expect returns the next reply line, passing "note" lines on.
func (c *child) expect(ctx context.Context, timeout time.Duration) (string, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case line, ok := <-c.lines:
			if !ok {
				<-c.exit
				return "", fmt.Errorf("pps: %s exited: %v", c.name, c.err)
			}
			if rest, isNote := strings.CutPrefix(line, noteWord+" "); isNote {
				c.notes(c.name + ": " + rest)
				continue
			}
			return line, nil
		case <-timer.C:
			return "", fmt.Errorf("pps: %s: no reply within %v", c.name, timeout)
		case <-ctx.Done():
			return "", fmt.Errorf("pps: %s: %w", c.name, ctx.Err())
		}
	}
}

// call sends a command and returns the reply line.
func (c *child) call(ctx context.Context, cmd string, timeout time.Duration) (string, error) {
	if _, err := io.WriteString(c.stdin, cmd+"\n"); err != nil {
		return "", fmt.Errorf("pps: %s: send %q: %w", c.name, cmd, err)
	}
	return c.expect(ctx, timeout)
}

// close asks the child to quit and waits for it (killing it after quitTimeout).
func (c *child) close() error {
	_, _ = io.WriteString(c.stdin, msgQuit+"\n")
	_ = c.stdin.Close()
	timer := time.NewTimer(quitTimeout)
	defer timer.Stop()
	for {
		select {
		case _, ok := <-c.lines:
			if ok {
				continue // drain late output
			}
			<-c.exit
			if c.err != nil {
				return fmt.Errorf("pps: %s: %w", c.name, c.err)
			}
			return nil
		case <-timer.C:
			_ = c.cmd.Process.Kill()
			<-c.exit
			return fmt.Errorf("pps: %s did not quit within %v: killed", c.name, quitTimeout)
		}
	}
}
