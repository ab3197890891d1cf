package wire_test

import (
	"bytes"
	"fmt"

	"github.com/naquid/naquid/internal/wire"
)

func Example() {
	// The opener of a stream names its protocol, then sends frames.
	var out []byte
	out, _ = wire.AppendPreamble(out, "game/rpc")
	out, _ = wire.AppendRequest(out, 1, 7, []byte("ping-pay"))
	out = wire.AppendNotify(out, 0x7FFF, []byte("hi"))
	out, _ = wire.AppendError(out, 7, -999, "test failure reason", nil)

	// The acceptor reads them back.
	r := wire.NewReader(bytes.NewReader(out), 0, wire.DefaultMaxPayload)
	name, _ := r.NextPreamble()
	fmt.Println("protocol", name)
	for {
		f, err := r.NextFrame()
		if err != nil {
			fmt.Println(err)
			break
		}
		switch f.Kind {
		case wire.KindError:
			code, msg, _, _ := wire.ParseErrorPayload(f.Payload)
			fmt.Println(f.Kind, f.MsgID, code, msg)
		default:
			fmt.Printf("%s method=%d msgid=%d %q\n", f.Kind, f.Method, f.MsgID, f.Payload)
		}
	}
	// Output:
	// protocol game/rpc
	// request method=1 msgid=7 "ping-pay"
	// notify method=32767 msgid=0 "hi"
	// error 7 -999 test failure reason
	// EOF
}

func ExampleParseFrame() {
	frame, _ := wire.AppendReply(nil, 42, []byte("pong"))
	// Bytes arrive in pieces: every strict prefix asks for more.
	for n := 0; n <= len(frame); n++ {
		f, used, err := wire.ParseFrame(frame[:n], 0)
		if err == wire.ErrShort {
			continue
		}
		fmt.Println(f.Kind, f.MsgID, string(f.Payload), used, err)
	}
	// Output:
	// reply 42 pong 7 <nil>
}
