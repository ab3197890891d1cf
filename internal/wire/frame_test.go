package wire

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/quic-go/quic-go/quicvarint"
)

// frameCases are valid frames of every kind, including the extremes of every field.
var frameCases = []struct {
	desc string
	f    Frame
}{
	{"ping request", Frame{Kind: KindRequest, Method: 1, MsgID: 7, Payload: seq(8)}},
	{"request, empty payload", Frame{Kind: KindRequest, Method: 0, MsgID: 1, Payload: []byte{}}},
	{"request, method 62 inline", Frame{Kind: KindRequest, Method: 62, MsgID: 63, Payload: seq(3)}},
	{"request, method 63 extended", Frame{Kind: KindRequest, Method: 63, MsgID: 64, Payload: seq(1)}},
	{"request, largest method and msgid", Frame{Kind: KindRequest, Method: math.MaxUint32, MsgID: quicvarint.Max, Payload: seq(5)}},
	{"request, 300-byte payload", Frame{Kind: KindRequest, Method: 9, MsgID: 16384, Payload: seq(300)}},
	{"reply", Frame{Kind: KindReply, MsgID: 7, Payload: seq(8)}},
	{"reply, msgid 0, empty", Frame{Kind: KindReply, MsgID: 0, Payload: []byte{}}},
	{"reply, largest msgid", Frame{Kind: KindReply, MsgID: quicvarint.Max, Payload: seq(2)}},
	{"error", Frame{Kind: KindError, MsgID: 3, Payload: []byte{0x47, 0xcd, 0x01, 0x61, 0xff}}},
	{"error, empty payload", Frame{Kind: KindError, MsgID: 1 << 40, Payload: []byte{}}},
	{"notify", Frame{Kind: KindNotify, Method: 5, Payload: seq(4)}},
	{"notify, method 0x7fff", Frame{Kind: KindNotify, Method: 0x7FFF, Payload: []byte("hi")}},
	{"notify, largest method, empty", Frame{Kind: KindNotify, Method: math.MaxUint32, Payload: []byte{}}},
}

func equalFrame(a, b Frame) bool {
	return a.Kind == b.Kind && a.Method == b.Method && a.MsgID == b.MsgID && bytes.Equal(a.Payload, b.Payload)
}

func TestFrameRoundTrip(t *testing.T) {
	for _, tt := range frameCases {
		t.Run(tt.desc, func(t *testing.T) {
			enc, err := AppendFrame([]byte{0xEE}, tt.f)
			if err != nil {
				t.Fatalf("AppendFrame: %v", err)
			}
			if enc[0] != 0xEE {
				t.Fatalf("AppendFrame overwrote dst")
			}
			enc = enc[1:]
			in := append(append([]byte{}, enc...), 0x00, 0x01) // next frame's bytes follow
			got, n, err := ParseFrame(in, 0)
			if err != nil || n != len(enc) || !equalFrame(got, tt.f) {
				t.Fatalf("ParseFrame = %+v, %d, %v; want %+v, %d", got, n, err, tt.f, len(enc))
			}
			if cap(got.Payload) != len(got.Payload) {
				t.Errorf("payload capacity %d extends past its length %d", cap(got.Payload), len(got.Payload))
			}
			// Split at every byte boundary: every strict prefix is ErrShort.
			for cut := range len(enc) {
				if _, _, err := ParseFrame(enc[:cut], 0); err != ErrShort {
					t.Fatalf("ParseFrame of %d/%d bytes: err = %v, want ErrShort", cut, len(enc), err)
				}
			}
			// The helpers produce the same bytes.
			var h []byte
			switch tt.f.Kind {
			case KindRequest:
				h, err = AppendRequest(nil, tt.f.Method, tt.f.MsgID, tt.f.Payload)
			case KindReply:
				h, err = AppendReply(nil, tt.f.MsgID, tt.f.Payload)
			case KindNotify:
				h = AppendNotify(nil, tt.f.Method, tt.f.Payload)
			case KindError:
				h = enc // built from parts in TestAppendError
			}
			if err != nil || !bytes.Equal(h, enc) {
				t.Errorf("helper = % x, %v; want % x", h, err, enc)
			}
		})
	}
}

func TestFrameGolden(t *testing.T) {
	ping := seq(8)
	req, err := AppendRequest(nil, 1, 7, ping)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := AppendReply(nil, 7, ping)
	if err != nil {
		t.Fatal(err)
	}
	errFrame, err := AppendError(nil, 9, -999, "test failure reason", []byte{1, 2})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		desc string
		got  []byte
		want string
	}{
		{"ping request", req, "01 07 08 01 02 03 04 05 06 07 08"},
		{"ping reply", rep, "40 07 08 01 02 03 04 05 06 07 08"},
		{"notify 0x7fff", AppendNotify(nil, 0x7FFF, []byte("hi")), "ff 80 00 7f ff 02 68 69"},
		{"notify method 63", AppendNotify(nil, 63, nil), "ff 3f 00"},
		{"error", errFrame, "80 09 18 47 cd 13" + " 74 65 73 74 20 66 61 69 6c 75 72 65 20 72 65 61 73 6f 6e" + " 01 02"},
	}
	for _, tt := range tests {
		if want := unhex(t, tt.want); !bytes.Equal(tt.got, want) {
			t.Errorf("%s = % x, want % x", tt.desc, tt.got, want)
		}
	}
	if len(req) != 11 {
		t.Errorf("ping request is %d bytes, want 11", len(req))
	}
}

func TestPingAtMost13Bytes(t *testing.T) {
	for _, msgid := range []uint64{1, 63, 64, 1000, 16383} {
		b, err := AppendRequest(nil, 1, msgid, seq(8))
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > 13 {
			t.Errorf("ping with msgid %d is %d bytes, want at most 13", msgid, len(b))
		}
	}
}

func TestManyFramesInOneBuffer(t *testing.T) {
	var buf []byte
	for _, tt := range frameCases {
		var err error
		if buf, err = AppendFrame(buf, tt.f); err != nil {
			t.Fatal(err)
		}
	}
	// Once with ParseFrame, once with Decode reusing one Frame (fields of the previous frame
	// must not leak into the next: the cases mix kinds).
	rest := buf
	for i, tt := range frameCases {
		f, n, err := ParseFrame(rest, 0)
		if err != nil || !equalFrame(f, tt.f) {
			t.Fatalf("frame %d: %+v, %v; want %+v", i, f, err, tt.f)
		}
		rest = rest[n:]
	}
	if len(rest) != 0 {
		t.Fatalf("%d bytes left over", len(rest))
	}
	var f Frame
	for i, tt := range frameCases {
		n, err := f.Decode(buf, 0)
		if err != nil || !equalFrame(f, tt.f) {
			t.Fatalf("Decode of frame %d: %+v, %v; want %+v", i, f, err, tt.f)
		}
		buf = buf[n:]
	}
}

func TestAppendFrameInvalid(t *testing.T) {
	tests := []struct {
		desc string
		f    Frame
	}{
		{"unknown kind", Frame{Kind: 4, MsgID: 1}},
		{"request msgid 0", Frame{Kind: KindRequest, Method: 1}},
		{"request msgid over 2^62-1", Frame{Kind: KindRequest, MsgID: quicvarint.Max + 1}},
		{"reply msgid over 2^62-1", Frame{Kind: KindReply, MsgID: math.MaxUint64}},
		{"method on a reply", Frame{Kind: KindReply, Method: 1, MsgID: 1}},
		{"method on an error", Frame{Kind: KindError, Method: 1, MsgID: 1}},
		{"msgid on a notify", Frame{Kind: KindNotify, Method: 1, MsgID: 1}},
	}
	for _, tt := range tests {
		dst := []byte{1, 2}
		got, err := AppendFrame(dst, tt.f)
		if !errors.Is(err, ErrInvalid) || !bytes.Equal(got, dst) {
			t.Errorf("%s: AppendFrame = % x, %v; want dst unchanged and ErrInvalid", tt.desc, got, err)
		}
	}
	if _, err := AppendRequest(nil, 1, 0, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("AppendRequest msgid 0: %v, want ErrInvalid", err)
	}
	if _, err := AppendRequest(nil, 1, MaxVarint+1, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("AppendRequest huge msgid: %v, want ErrInvalid", err)
	}
	if _, err := AppendReply(nil, math.MaxUint64, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("AppendReply huge msgid: %v, want ErrInvalid", err)
	}
	if _, err := AppendError(nil, math.MaxUint64, 1, "", nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("AppendError huge msgid: %v, want ErrInvalid", err)
	}
	if _, err := AppendError(nil, 1, MaxErrorCode+1, "", nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("AppendError code over range: %v, want ErrInvalid", err)
	}
}

func TestParseFrameMalformed(t *testing.T) {
	tests := []struct {
		desc, in string
	}{
		{"method bits on a reply", "41 01 00"},
		{"method bits on an error", "bf 01 00"},
		{"request with msgid 0", "01 00 00"},
		{"extended request method below 63", "3f 3e 01 00"},
		{"extended notify method 0", "ff 00 00"},
		{"extended method over 2^32-1", "3f c0 00 00 01 00 00 00 00 01 00"},
		{"non-minimal method", "3f 40 3f 01 00"},
		{"non-minimal msgid", "01 40 07 00"},
		{"non-minimal length", "c1 40 00"},
	}
	for _, tt := range tests {
		in := unhex(t, tt.in)
		_, _, err := ParseFrame(in, 0)
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: ParseFrame(%s) error = %v, want ErrMalformed", tt.desc, tt.in, err)
		}
	}
	// The problem is reported as soon as its bytes are there, not only when the frame is whole.
	for _, in := range []string{"41", "01 00", "3f 3e", "c1 40 00"} {
		if _, _, err := ParseFrame(unhex(t, in), 0); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseFrame(%s) error = %v, want ErrMalformed before the rest arrives", in, err)
		}
	}
}

func TestParseFrameTooLarge(t *testing.T) {
	tests := []struct {
		desc  string
		f     Frame
		limit int
		size  uint64
	}{
		{"request one over", Frame{Kind: KindRequest, Method: 1, MsgID: 1, Payload: seq(101)}, 100, 101},
		{"reply", Frame{Kind: KindReply, MsgID: 1, Payload: seq(5000)}, 4096, 5000},
		{"notify over default", Frame{Kind: KindNotify, Payload: make([]byte, DefaultMaxPayload+1)}, 0, DefaultMaxPayload + 1},
	}
	for _, tt := range tests {
		enc, err := AppendFrame(nil, tt.f)
		if err != nil {
			t.Fatal(err)
		}
		hdr := len(enc) - len(tt.f.Payload)
		// Only the header is needed to know.
		_, _, err = ParseFrame(enc[:hdr], tt.limit)
		var tl *FrameTooLargeError
		if !errors.As(err, &tl) || !errors.Is(err, ErrFrameTooLarge) {
			t.Fatalf("%s: error = %v, want *FrameTooLargeError", tt.desc, err)
		}
		wantLimit := tt.limit
		if wantLimit == 0 {
			wantLimit = DefaultMaxPayload
		}
		if tl.Size != tt.size || tl.Limit != wantLimit {
			t.Errorf("%s: error = %+v, want size %d limit %d", tt.desc, *tl, tt.size, wantLimit)
		}
		if !strings.Contains(err.Error(), "exceeds limit") {
			t.Errorf("error text %q", err)
		}
	}
	// Exactly at the limit is fine.
	enc := AppendNotify(nil, 1, seq(100))
	if _, _, err := ParseFrame(enc, 100); err != nil {
		t.Errorf("payload at the limit: %v", err)
	}
}

func TestKindString(t *testing.T) {
	tests := map[Kind]string{KindRequest: "request", KindReply: "reply", KindError: "error", KindNotify: "notify", 7: "Kind(7)"}
	for k, want := range tests {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d).String() = %q, want %q", uint8(k), got, want)
		}
	}
}

func TestErrorPayloadRoundTrip(t *testing.T) {
	tests := []struct {
		code int64
		msg  string
		data []byte
	}{
		{-999, "test failure reason", nil},
		{0, "", nil},
		{1, "x", []byte{0, 1, 2}},
		{MaxErrorCode, strings.Repeat("m", 100), seq(70)},
		{MinErrorCode, "ünïcödé", []byte{}},
	}
	for _, tt := range tests {
		p, err := AppendErrorPayload([]byte{0xEE}, tt.code, tt.msg, tt.data)
		if err != nil || p[0] != 0xEE {
			t.Fatalf("AppendErrorPayload(%d): % x, %v", tt.code, p, err)
		}
		code, msg, data, err := ParseErrorPayload(p[1:])
		if err != nil || code != tt.code || msg != tt.msg || !bytes.Equal(data, tt.data) {
			t.Errorf("ParseErrorPayload = %d, %q, % x, %v; want %d, %q, % x", code, msg, data, err, tt.code, tt.msg, tt.data)
		}
		// AppendError frames the same payload.
		fr, err := AppendError(nil, 5, tt.code, tt.msg, tt.data)
		if err != nil {
			t.Fatal(err)
		}
		f, _, err := ParseFrame(fr, 0)
		if err != nil || f.Kind != KindError || f.MsgID != 5 || !bytes.Equal(f.Payload, p[1:]) {
			t.Errorf("AppendError frame parses to %+v, %v", f, err)
		}
	}
}

func TestErrorPayloadInvalidUTF8Replaced(t *testing.T) {
	p, err := AppendErrorPayload(nil, 3, "a\xffb", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, msg, _, err := ParseErrorPayload(p)
	if err != nil || msg != "a\uFFFDb" {
		t.Fatalf("message = %q, %v; want invalid byte replaced by U+FFFD", msg, err)
	}
	fr, err := AppendError(nil, 1, 3, "a\xffb", nil)
	if err != nil {
		t.Fatal(err)
	}
	f, _, err := ParseFrame(fr, 0)
	if err != nil || !bytes.Equal(f.Payload, p) {
		t.Fatalf("AppendError payload % x, %v; want % x", f.Payload, err, p)
	}
}

func TestErrorPayloadErrors(t *testing.T) {
	for _, code := range []int64{MaxErrorCode + 1, MinErrorCode - 1, math.MaxInt64, math.MinInt64} {
		dst := []byte{9}
		got, err := AppendErrorPayload(dst, code, "m", nil)
		if !errors.Is(err, ErrInvalid) || !bytes.Equal(got, dst) {
			t.Errorf("AppendErrorPayload(code %d) = % x, %v; want ErrInvalid", code, got, err)
		}
	}
	for _, in := range []string{
		"",            // no code
		"40",          // truncated code
		"40 01 00",    // non-minimal code
		"02",          // no message length
		"02 05 61 62", // message longer than the payload
		"02 40",       // truncated message length
		"02 02 c3 28", // message not UTF-8
	} {
		if _, _, _, err := ParseErrorPayload(unhex(t, in)); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseErrorPayload(%s) error = %v, want ErrMalformed", in, err)
		}
	}
}

// TestErrorPayloadLen: the length matches what AppendErrorPayload appends, invalid UTF-8
// included (each invalid sequence is sent as U+FFFD).
func TestErrorPayloadLen(t *testing.T) {
	for _, tc := range []struct {
		name string
		code int64
		msg  string
		data []byte
	}{
		{"empty", 0, "", nil},
		{"negative code", -1 << 40, "no", []byte{1, 2, 3}},
		{"long message", MaxErrorCode, string(make([]byte, 300)), make([]byte, 70000)},
		{"invalid UTF-8", 5, "a\xffb\xfe\xfd", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := AppendErrorPayload(nil, tc.code, tc.msg, tc.data)
			if err != nil {
				t.Fatal(err)
			}
			if got := ErrorPayloadLen(tc.code, tc.msg, tc.data); got != len(b) {
				t.Fatalf("ErrorPayloadLen = %d, AppendErrorPayload appended %d", got, len(b))
			}
		})
	}
}
