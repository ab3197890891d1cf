package measure

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// ProcessUsage reads getrusage(RUSAGE_SELF).
func ProcessUsage() (Usage, error) {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return Usage{}, fmt.Errorf("measure: getrusage: %w", err)
	}
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return Usage{CPU: cpu, MaxRSSKiB: ru.Maxrss}, nil
}
