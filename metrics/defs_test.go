package metrics

import (
	"reflect"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/naquid/naquid/nq"
	"github.com/naquid/naquid/transport"
)

// TestEveryFieldExported fills each field of the stats structs (nq's stats and the transport
// counters) with a distinct value and checks that the metric definitions report each value
// exactly once: no field is missed or reported twice, and a field added to nq's stats or to
// transport.Counters without a metric fails here.
func TestEveryFieldExported(t *testing.T) {
	t.Run("server", func(t *testing.T) {
		var st nq.ServerStats
		var tc transport.Counters
		field := fill(t, &st, &tc)
		checkDefs(t, serverDefs, serverSnapshot{st, tc, true}, field)
	})
	t.Run("client", func(t *testing.T) {
		var st nq.ClientStats
		var tc transport.Counters
		field := fill(t, &st, &tc)
		checkDefs(t, clientDefs, clientSnapshot{st, tc, true}, field)
	})
}

// fill sets every field of the structs ptrs point to a distinct value and returns the field
// each value went to.
func fill(t *testing.T, ptrs ...any) map[float64]string {
	field := map[float64]string{} // value -> field name
	val := 0
	for _, p := range ptrs {
		v := reflect.ValueOf(p).Elem()
		for i := range v.NumField() {
			f := v.Field(i)
			val++
			switch f.Kind() {
			case reflect.Int, reflect.Int64:
				f.SetInt(int64(val))
			case reflect.Uint64:
				f.SetUint(uint64(val))
			default:
				t.Fatalf("%s.%s has kind %s: teach this test about it", v.Type(), v.Type().Field(i).Name, f.Kind())
			}
			field[float64(val)] = v.Type().Name() + "." + v.Type().Field(i).Name
		}
	}
	return field
}

func checkDefs[S any](t *testing.T, defs []def[S], st S, field map[float64]string) {
	seen := map[string]string{} // field -> metric
	names := map[string]bool{}
	for _, d := range defs {
		if names[d.name] {
			t.Errorf("metric %s defined twice", d.name)
		}
		names[d.name] = true
		if d.present != nil && !d.present(st) {
			t.Errorf("%s is left out of a snapshot that has everything", d.name)
		}
		f, ok := field[d.value(st)]
		if !ok {
			t.Errorf("%s reports %v, which is no field's value", d.name, d.value(st))
			continue
		}
		if prev, dup := seen[f]; dup {
			t.Errorf("field %s reported by both %s and %s", f, prev, d.name)
		}
		seen[f] = d.name
		counter := strings.HasSuffix(d.name, "_total")
		if counter != (d.kind == prometheus.CounterValue) {
			t.Errorf("%s: a counter's name ends in _total and only a counter's", d.name)
		}
		if d.help == "" {
			t.Errorf("%s has no help text", d.name)
		}
	}
	for _, f := range field {
		if _, ok := seen[f]; !ok {
			t.Errorf("field %s has no metric", f)
		}
	}
}

// TestStatsBeforeStart guards the assumption that a Server and a Client report stats before
// they start (the collectors may be registered first).
func TestStatsBeforeStart(t *testing.T) {
	if st := (&nq.Server{}).Stats(); st != (nq.ServerStats{}) {
		t.Errorf("stats of a new server = %+v, want zero", st)
	}
	if st := (&nq.Client{}).Stats(); st != (nq.ClientStats{}) {
		t.Errorf("stats of a new client = %+v, want zero", st)
	}
}
