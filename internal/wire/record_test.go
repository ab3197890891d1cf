package wire

import (
	"bytes"
	"errors"
	"math"
	"testing"
)

func TestRecordRoundTrip(t *testing.T) {
	for _, size := range []int{0, 1, 12, 63, 64, 16383, 16384, 100000} {
		p := seq(size)
		enc := AppendRecord([]byte{0xEE}, p)[1:]
		if len(enc) != RecordHeaderLen(size)+size {
			t.Fatalf("record of %d: %d bytes, RecordHeaderLen says %d", size, len(enc), RecordHeaderLen(size))
		}
		got, n, err := ParseRecord(append(append([]byte{}, enc...), 0x05), 0)
		if err != nil || n != len(enc) || !bytes.Equal(got, p) || cap(got) != len(got) {
			t.Fatalf("ParseRecord(%d) = %d bytes, %d, %v", size, len(got), n, err)
		}
		hdr := RecordHeaderLen(size)
		cuts := []int{}
		for c := range min(len(enc), hdr+3) {
			cuts = append(cuts, c)
		}
		cuts = append(cuts, len(enc)-1)
		for _, cut := range cuts {
			if cut >= len(enc) {
				continue
			}
			if _, _, err := ParseRecord(enc[:cut], 0); err != ErrShort {
				t.Fatalf("ParseRecord of %d/%d bytes: %v, want ErrShort", cut, len(enc), err)
			}
		}
	}
}

func TestRecordGolden(t *testing.T) {
	if got, want := AppendRecord(nil, nil), []byte{0}; !bytes.Equal(got, want) {
		t.Errorf("empty record = % x, want % x", got, want)
	}
	got := AppendRecord(nil, seq(12))
	if len(got) != 13 || got[0] != 12 {
		t.Errorf("12-byte record = % x, want 13 bytes starting 0c", got)
	}
}

func TestRecordHeaderLen(t *testing.T) {
	tests := []struct{ n, want int }{
		{-1, 1}, {0, 1}, {12, 1}, {63, 1}, {64, 2}, {16383, 2}, {16384, 4}, {1<<30 - 1, 4}, {1 << 30, 8},
	}
	for _, tt := range tests {
		if got := RecordHeaderLen(tt.n); got != tt.want {
			t.Errorf("RecordHeaderLen(%d) = %d, want %d", tt.n, got, tt.want)
		}
	}
}

func TestParseRecordErrors(t *testing.T) {
	enc := AppendRecord(nil, seq(200))
	_, _, err := ParseRecord(enc[:2], 199) // header only
	var tl *FrameTooLargeError
	if !errors.As(err, &tl) || tl.Size != 200 || tl.Limit != 199 {
		t.Errorf("oversized record: %v, want FrameTooLargeError{200, 199}", err)
	}
	if _, _, err := ParseRecord([]byte{0x40, 0x01}, 0); !errors.Is(err, ErrMalformed) {
		t.Errorf("non-minimal length: %v, want ErrMalformed", err)
	}
	// The largest declared length under the largest limit asks for more bytes, never overflows.
	if _, _, err := ParseRecord(unhex(t, "ff ff ff ff ff ff ff ff 01"), math.MaxInt); err != ErrShort {
		t.Errorf("largest length: %v, want ErrShort", err)
	}
	if _, _, err := ParseRecord(nil, 0); err != ErrShort {
		t.Errorf("empty input: %v, want ErrShort", err)
	}
}
