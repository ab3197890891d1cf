package measure

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Progress prints a live status line (elapsed time, requests, request rate over the last
// interval, errors) until Stop. On a terminal the line is rewritten in place; otherwise one line
// is printed per interval.
type Progress struct {
	w         io.Writer
	label     string
	count     func() (requests, errors int64)
	overwrite bool
	start     time.Time
	stop      chan struct{}
	done      chan struct{}
	once      sync.Once
}

// StartProgress starts printing to w every interval (at least 100 ms). count returns the totals
// so far. overwrite rewrites the line in place with a carriage return (for terminals).
func StartProgress(w io.Writer, label string, interval time.Duration, overwrite bool, count func() (requests, errors int64)) *Progress {
	p := &Progress{
		w: w, label: label, count: count, overwrite: overwrite,
		start: time.Now(), stop: make(chan struct{}), done: make(chan struct{}),
	}
	go p.run(max(interval, 100*time.Millisecond))
	return p
}

func (p *Progress) run(interval time.Duration) {
	defer close(p.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	lastT, lastN := p.start, int64(0)
	for {
		select {
		case <-p.stop:
			n, e := p.count()
			el := time.Since(p.start)
			p.print(el, n, e, float64(n)/max(el.Seconds(), 1e-9))
			if p.overwrite {
				fmt.Fprintln(p.w)
			}
			return
		case now := <-t.C:
			n, e := p.count()
			p.print(now.Sub(p.start), n, e, float64(n-lastN)/max(now.Sub(lastT).Seconds(), 1e-9))
			lastT, lastN = now, n
		}
	}
}

func (p *Progress) print(elapsed time.Duration, n, errs int64, rate float64) {
	line := fmt.Sprintf("%s %6.1fs %10d req %9s req/s %d err", p.label, elapsed.Seconds(), n, SI(rate), errs)
	if p.overwrite {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
		return
	}
	fmt.Fprintln(p.w, line)
}

// Stop prints the final totals and stops. It is safe to call more than once.
func (p *Progress) Stop() {
	p.once.Do(func() { close(p.stop) })
	<-p.done
}

// IsTerminal reports whether f is a character device (a terminal), where Progress may rewrite
// its line in place.
func IsTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// SI formats v with a k, M or G suffix and three significant digits ("1.23M", "456k", "78").
func SI(v float64) string {
	switch {
	case v >= 999.5e6:
		return sig3(v/1e9) + "G"
	case v >= 999.5e3:
		return sig3(v/1e6) + "M"
	case v >= 999.5:
		return sig3(v/1e3) + "k"
	default:
		return sig3(v)
	}
}

// sig3 formats v (below 1000) with three significant digits and no exponent.
func sig3(v float64) string {
	switch {
	case v >= 99.95:
		return fmt.Sprintf("%.0f", v)
	case v >= 9.995:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}
