package afxdp

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestConfigDefaults(t *testing.T) {
	c, err := Config{Interface: "eth0"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.RXRingSize != DefaultRXRingSize || c.TXRingSize != DefaultTXRingSize || c.FrameSize != DefaultFrameSize ||
		c.Mode != ModeAuto || c.Attach != AttachAuto || len(c.Queues) != 0 {
		t.Fatalf("defaults: %+v", c)
	}
}

// TestConfigErrors: each invalid field is named in a *ConfigError.
func TestConfigErrors(t *testing.T) {
	ok := Config{Interface: "eth0"}
	with := func(f func(*Config)) Config {
		c := ok
		f(&c)
		return c
	}
	for _, tc := range []struct {
		cfg   Config
		field string
	}{
		{Config{}, "Interface"},
		{with(func(c *Config) { c.Interface = "a-name-far-too-long" }), "Interface"},
		{with(func(c *Config) { c.Queues = []int{0, -1} }), "Queues[1]"},
		{with(func(c *Config) { c.Queues = []int{2, 3, 2} }), "Queues[2]"},
		{with(func(c *Config) { c.RXRingSize = 1000 }), "RXRingSize"},
		{with(func(c *Config) { c.RXRingSize = 32 }), "RXRingSize"},
		{with(func(c *Config) { c.TXRingSize = 1 << 20 }), "TXRingSize"},
		{with(func(c *Config) { c.TXRingSize = -64 }), "TXRingSize"},
		{with(func(c *Config) { c.FrameSize = 3000 }), "FrameSize"},
		{with(func(c *Config) { c.Mode = 9 }), "Mode"},
		{with(func(c *Config) { c.Attach = -1 }), "Attach"},
		{with(func(c *Config) { c.Mode, c.Attach = ModeZeroCopy, AttachGeneric }), "Mode"},
	} {
		t.Run(tc.field, func(t *testing.T) {
			_, err := tc.cfg.withDefaults()
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field != tc.field || !strings.Contains(err.Error(), "Config."+tc.field) {
				t.Fatalf("withDefaults(%+v) = %v, want a *ConfigError naming %s", tc.cfg, err, tc.field)
			}
			// New reports the same error before touching the system.
			if _, err := New(context.Background(), netip.MustParseAddrPort("192.0.2.1:0"), tc.cfg); !errors.As(err, &ce) {
				t.Fatalf("New = %v, want the *ConfigError", err)
			}
		})
	}
}
