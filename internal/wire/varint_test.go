package wire

import (
	"bytes"
	"errors"
	"math"
	"testing"

	"github.com/quic-go/quic-go/quicvarint"
)

func TestVarint(t *testing.T) {
	tests := []struct {
		v   uint64
		enc string
	}{
		{0, "00"},
		{37, "25"}, // RFC 9000 appendix A.1
		{63, "3f"},
		{64, "40 40"},
		{15293, "7b bd"}, // RFC 9000 appendix A.1
		{16383, "7f ff"},
		{16384, "80 00 40 00"},
		{494878333, "9d 7f 3e 7d"}, // RFC 9000 appendix A.1
		{1<<30 - 1, "bf ff ff ff"},
		{1 << 30, "c0 00 00 00 40 00 00 00"},
		{151288809941952652, "c2 19 7c 5e ff 14 e8 8c"}, // RFC 9000 appendix A.1
		{MaxVarint, "ff ff ff ff ff ff ff ff"},
	}
	for _, tt := range tests {
		want := unhex(t, tt.enc)
		got := appendVarint(nil, tt.v)
		if !bytes.Equal(got, want) {
			t.Errorf("appendVarint(%d) = % x, want % x", tt.v, got, want)
		}
		if ref := quicvarint.Append(nil, tt.v); !bytes.Equal(ref, want) {
			t.Errorf("quicvarint.Append(%d) = % x, want % x", tt.v, ref, want)
		}
		if l := varintLen(tt.v); l != len(want) {
			t.Errorf("varintLen(%d) = %d, want %d", tt.v, l, len(want))
		}
		v, n, err := parseVarint(append(want, 0xAA))
		if err != nil || v != tt.v || n != len(want) {
			t.Errorf("parseVarint(% x) = %d, %d, %v; want %d, %d, nil", want, v, n, err, tt.v, len(want))
		}
		for cut := range len(want) {
			if _, _, err := parseVarint(want[:cut]); err != ErrShort {
				t.Errorf("parseVarint(% x) error = %v, want ErrShort", want[:cut], err)
			}
		}
	}
}

func TestVarintRejectsNonMinimal(t *testing.T) {
	for _, enc := range []string{
		"40 25",                   // 37 in 2 bytes (RFC 9000 A.1 accepts it; naquid does not)
		"40 00",                   // 0 in 2 bytes
		"80 00 3f ff",             // 16383 in 4 bytes
		"c0 00 00 00 3f ff ff ff", // 2^30-1 in 8 bytes
	} {
		_, _, err := parseVarint(unhex(t, enc))
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("parseVarint(%s) error = %v, want ErrMalformed", enc, err)
		}
	}
}

func TestVarintMatchesQuicvarint(t *testing.T) {
	// Every length boundary and a spread of values in between.
	var vals []uint64
	for _, edge := range []uint64{0, maxVarint1, maxVarint2, maxVarint4, MaxVarint} {
		for d := uint64(0); d < 3; d++ {
			vals = append(vals, edge-min(d, edge), min(edge+d, MaxVarint))
		}
	}
	for v := uint64(1); v < MaxVarint; v = v*3 + 1 {
		vals = append(vals, v)
	}
	for _, v := range vals {
		enc := appendVarint(nil, v)
		if ref := quicvarint.Append(nil, v); !bytes.Equal(enc, ref) {
			t.Fatalf("appendVarint(%d) = % x, quicvarint % x", v, enc, ref)
		}
		rv, rn, err := quicvarint.Parse(enc)
		if err != nil || rv != v || rn != len(enc) || varintLen(v) != quicvarint.Len(v) {
			t.Fatalf("quicvarint disagrees on %d: %d %d %v", v, rv, rn, err)
		}
	}
}

func TestZigzag(t *testing.T) {
	tests := []struct {
		v  int64
		zz uint64
	}{
		{0, 0}, {-1, 1}, {1, 2}, {-2, 3}, {2, 4}, {-999, 1997},
		{MaxErrorCode, MaxVarint - 1}, {MinErrorCode, MaxVarint},
		{math.MaxInt64, math.MaxUint64 - 1}, {math.MinInt64, math.MaxUint64},
	}
	for _, tt := range tests {
		if got := zigzag(tt.v); got != tt.zz {
			t.Errorf("zigzag(%d) = %d, want %d", tt.v, got, tt.zz)
		}
		if got := unzigzag(tt.zz); got != tt.v {
			t.Errorf("unzigzag(%d) = %d, want %d", tt.zz, got, tt.v)
		}
	}
}
