module github.com/naquid/naquid/bench

go 1.26.0

replace github.com/naquid/naquid => ../

require (
	github.com/HdrHistogram/hdrhistogram-go v1.4.0
	github.com/naquid/naquid v0.0.0-00010101000000-000000000000
	github.com/quic-go/quic-go v0.65.0
	github.com/xtaci/kcp-go/v5 v5.6.24
	github.com/xtaci/smux v1.5.58
	golang.org/x/sys v0.50.0
	google.golang.org/grpc v1.85.0
)

require (
	github.com/cilium/ebpf v0.22.0 // indirect
	github.com/klauspost/cpuid/v2 v2.2.6 // indirect
	github.com/klauspost/reedsolomon v1.12.0 // indirect
	github.com/pkg/errors v0.9.1 // indirect
	github.com/tjfoc/gmsm v1.4.1 // indirect
	golang.org/x/crypto v0.58.0 // indirect
	golang.org/x/net v0.62.0 // indirect
	golang.org/x/text v0.43.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260817212433-ac3dfec99bb1 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)
