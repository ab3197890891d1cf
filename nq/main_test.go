package nq_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any goroutine outlives the tests: every Server, Client, Conn and
// stream must clean up after itself.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
