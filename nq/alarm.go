package nq

import (
	"context"
	"time"
)

// Alarm is a timer owned by a connection or a stream: once its owner has ended, it never starts
// its function again. Create one with Conn.AfterFunc or the streams' AfterFunc.
type Alarm struct {
	owner context.Context
	f     func()
	timer *time.Timer
}

// newAlarm arms f. The owner is checked when the timer fires (no watch is registered on it, so
// an alarm costs nothing once it has fired or been stopped).
func newAlarm(owner context.Context, d time.Duration, f func()) *Alarm {
	a := &Alarm{owner: owner, f: f}
	a.timer = time.AfterFunc(d, a.fire)
	return a
}

func (a *Alarm) fire() {
	if a.owner.Err() != nil {
		return
	}
	a.f()
}

// Stop prevents the alarm from firing. It reports whether the call stopped it (false when it
// had already fired or been stopped).
func (a *Alarm) Stop() bool {
	return a.timer.Stop()
}

// Reset re-arms the alarm to fire after d (also after it fired or was stopped) and reports
// whether it had been active. It does nothing and returns false once the owner has ended.
func (a *Alarm) Reset(d time.Duration) bool {
	if a.owner.Err() != nil {
		return false
	}
	return a.timer.Reset(d)
}

// AfterFunc runs f on its own goroutine after d, unless the Conn has ended by then (closed on a
// server, finalized on a client: a client Conn's alarms survive reconnects). Use a stream's
// AfterFunc for an alarm that ends with one connection generation.
func (c *Conn) AfterFunc(d time.Duration, f func()) *Alarm { return newAlarm(c.ctx, d, f) }

// AfterFunc runs f on its own goroutine after d, unless the stream has closed by then.
func (r *RPCStream) AfterFunc(d time.Duration, f func()) *Alarm { return newAlarm(r.s.ctx, d, f) }

// AfterFunc runs f on its own goroutine after d, unless the stream has closed by then.
func (rs *RecordStream[T]) AfterFunc(d time.Duration, f func()) *Alarm {
	return newAlarm(rs.s.ctx, d, f)
}
