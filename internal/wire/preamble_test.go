package wire

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestPreambleRoundTrip(t *testing.T) {
	tests := []struct {
		name   string
		header string // encoded length
	}{
		{"a", "01"},
		{"chat", "04"},
		{"rpc/ü", "06"},
		{strings.Repeat("x", 63), "3f"},
		{strings.Repeat("x", 64), "40 40"},
		{strings.Repeat("n", MaxNameLen), "40 ff"},
	}
	for _, tt := range tests {
		want := append(unhex(t, tt.header), tt.name...)
		got, err := AppendPreamble([]byte{0xEE}, tt.name)
		if err != nil || !bytes.Equal(got[1:], want) || got[0] != 0xEE {
			t.Fatalf("AppendPreamble(%q) = % x, %v; want ee % x", tt.name, got, err, want)
		}
		in := append(want, 0x01, 0x02) // stream data follows
		name, n, err := ParsePreamble(in)
		if err != nil || name != tt.name || n != len(want) {
			t.Fatalf("ParsePreamble(%q) = %q, %d, %v", tt.name, name, n, err)
		}
		for cut := range len(want) {
			if _, _, err := ParsePreamble(want[:cut]); err != ErrShort {
				t.Fatalf("ParsePreamble of %d/%d bytes: err = %v, want ErrShort", cut, len(want), err)
			}
		}
	}
}

func TestPreambleGolden(t *testing.T) {
	got, err := AppendPreamble(nil, "chat")
	if want := unhex(t, "04 63 68 61 74"); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("AppendPreamble(chat) = % x, %v; want % x", got, err, want)
	}
}

func TestAppendPreambleInvalid(t *testing.T) {
	for _, name := range []string{"", strings.Repeat("x", MaxNameLen+1), "bad\xff"} {
		dst := []byte{1}
		got, err := AppendPreamble(dst, name)
		if !errors.Is(err, ErrInvalid) || !bytes.Equal(got, dst) {
			t.Errorf("AppendPreamble(%.10q) = % x, %v; want dst unchanged and ErrInvalid", name, got, err)
		}
	}
}

func TestParsePreambleMalformed(t *testing.T) {
	tests := []struct {
		desc, in string
	}{
		{"zero length", "00 61"},
		{"length 256, detected before the name", "41 00"},
		{"huge length", "c0 00 00 01 00 00 00 00"},
		{"non-minimal length", "40 01 61"},
		{"not UTF-8", "02 c3 28"},
	}
	for _, tt := range tests {
		_, _, err := ParsePreamble(unhex(t, tt.in))
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: ParsePreamble(%s) error = %v, want ErrMalformed", tt.desc, tt.in, err)
		}
	}
}
