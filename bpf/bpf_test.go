package bpf

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestConfigValidation(t *testing.T) {
	many := make([]uint16, MaxPorts+1)
	for i := range many {
		many[i] = uint16(1000 + i)
	}
	tests := []struct {
		name      string
		cfg       Config
		wantField string // "" for a valid config
		want      Config // the config after defaults, when valid
	}{
		{"zero value", Config{}, "Ports", Config{}},
		{"empty ports", Config{Ports: []uint16{}}, "Ports", Config{}},
		{"too many ports", Config{Ports: many}, "Ports", Config{}},
		{"port 0", Config{Ports: []uint16{4433, 0}}, "Ports[1]", Config{}},
		{"duplicate port", Config{Ports: []uint16{4433, 80, 4433}}, "Ports[2]", Config{}},
		{"negative queue count", Config{Ports: []uint16{4433}, QueueCount: -1}, "QueueCount", Config{}},
		{"queue count too large", Config{Ports: []uint16{4433}, QueueCount: MaxQueues + 1}, "QueueCount", Config{}},
		{"one port, default queues", Config{Ports: []uint16{4433}}, "", Config{Ports: []uint16{4433}, QueueCount: 1}},
		{"max ports and queues", Config{Ports: many[:MaxPorts], QueueCount: MaxQueues}, "", Config{Ports: many[:MaxPorts], QueueCount: MaxQueues}},
		{"port 65535", Config{Ports: []uint16{65535}, QueueCount: 4}, "", Config{Ports: []uint16{65535}, QueueCount: 4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.cfg.withDefaults()
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("withDefaults: %v", err)
				}
				if !reflect.DeepEqual(got, tt.want) {
					t.Fatalf("withDefaults = %+v, want %+v", got, tt.want)
				}
				if len(tt.cfg.Ports) > 0 && &got.Ports[0] == &tt.cfg.Ports[0] {
					t.Error("withDefaults shares the caller's Ports slice")
				}
				return
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("withDefaults error = %v, want a *ConfigError", err)
			}
			if ce.Field != tt.wantField {
				t.Errorf("Field = %q, want %q (%v)", ce.Field, tt.wantField, err)
			}
			if !strings.Contains(err.Error(), "Config."+tt.wantField) {
				t.Errorf("error %q does not name Config.%s", err, tt.wantField)
			}
		})
	}
}

func TestAttachModeString(t *testing.T) {
	for mode, want := range map[AttachMode]string{
		AttachAuto:     "auto",
		AttachDriver:   "driver",
		AttachGeneric:  "generic",
		AttachMode(42): "AttachMode(42)",
	} {
		if got := mode.String(); got != want {
			t.Errorf("AttachMode(%d).String() = %q, want %q", int(mode), got, want)
		}
	}
}

func TestCountersTotalAndSub(t *testing.T) {
	c := Counters{
		RedirectV4: 1, RedirectV6: 2, NoSocket: 3, PassNotIP: 4, PassVLAN: 5, PassNotUDP: 6,
		PassOtherPort: 7, PassFragment: 8, PassIPv6Ext: 9, PassMalformed: 10,
	}
	if got, want := c.Total(), uint64(1+2+4+5+6+7+8+9+10); got != want {
		t.Errorf("Total = %d, want %d (NoSocket excluded)", got, want)
	}
	// Every field takes part in Sub: doubling each field and subtracting gives c back.
	var doubled Counters
	cv, dv := reflect.ValueOf(c), reflect.ValueOf(&doubled).Elem()
	for i := range cv.NumField() {
		dv.Field(i).SetUint(2 * cv.Field(i).Uint())
	}
	if got := doubled.Sub(c); got != c {
		t.Errorf("Sub = %+v, want %+v", got, c)
	}
}
