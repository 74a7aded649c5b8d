// grpc-go-xds: a proxyless grpc-go workload for the interop tests (GRPC_XDS_BOOTSTRAP).
//
//	grpc-go-xds server ADDR
//	    an xDS-enabled server (xds.NewGRPCServer, xDS server credentials) on ADDR serving
//	    grpc.health.v1.Health and grpc.testing.TestService; prints "serving" once its xDS
//	    listener has arrived and "not-serving: ERR" when it goes.
//	grpc-go-xds client TARGET N
//	    dials TARGET (xds:///host:port) with xDS client credentials, makes N unary
//	    Health/Check calls, then one Health/Watch stream (first message), and prints
//	    "check CODE" / "watch CODE" for each.
//	grpc-go-xds load TARGET CONCURRENCY WARMUP_SECS SECS
//	    the benchmark's load: one channel to TARGET (xDS client credentials), CONCURRENCY
//	    goroutines calling Health/Check back to back, WARMUP_SECS unmeasured then SECS
//	    measured; prints one line "ok N errors N rps F p50_us F p90_us F p99_us F max_us F
//	    cpu_ms F" (cpu_ms: this process's user+system CPU during the measured part), and
//	    the first error on stderr.
//
// Fallback credentials are insecure, as in gRPC's examples: with ISTIO_MUTUAL and STRICT
// the control plane's config makes both sides mTLS (the tests check it from our side).
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"
)

func main() {
	if len(os.Args) < 3 {
		fail("usage: grpc-go-xds server ADDR | client TARGET N")
	}
	switch os.Args[1] {
	case "server":
		server(os.Args[2])
	case "load":
		if len(os.Args) != 6 {
			fail("usage: grpc-go-xds load TARGET CONCURRENCY WARMUP_SECS SECS")
		}
		n, err1 := strconv.Atoi(os.Args[3])
		warm, err2 := strconv.ParseFloat(os.Args[4], 64)
		secs, err3 := strconv.ParseFloat(os.Args[5], 64)
		if err1 != nil || err2 != nil || err3 != nil || n < 1 {
			fail("load: CONCURRENCY must be a positive integer, WARMUP_SECS and SECS numbers")
		}
		load(os.Args[2], n, seconds(warm), seconds(secs))
	case "client":
		n := 1
		if len(os.Args) > 3 {
			v, err := strconv.Atoi(os.Args[3])
			if err != nil {
				fail("N: " + err.Error())
			}
			n = v
		}
		client(os.Args[2], n)
	default:
		fail("unknown mode " + os.Args[1])
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, msg)
	os.Exit(2)
}

func server(addr string) {
	creds, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		fail("server credentials: " + err.Error())
	}
	mode := xds.ServingModeCallback(func(a net.Addr, args xds.ServingModeChangeArgs) {
		if args.Err != nil {
			fmt.Printf("not-serving: %v\n", args.Err)
		} else {
			fmt.Printf("%v\n", args.Mode)
		}
	})
	s, err := xds.NewGRPCServer(grpc.Creds(creds), mode)
	if err != nil {
		fail("server: " + err.Error())
	}
	healthpb.RegisterHealthServer(s, health.NewServer())
	testgrpc.RegisterTestServiceServer(s, interop.NewTestServer())
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		fail("listen: " + err.Error())
	}
	if err := s.Serve(lis); err != nil {
		fail("serve: " + err.Error())
	}
}

func client(target string, n int) {
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		fail("client credentials: " + err.Error())
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds))
	if err != nil {
		fail("dial: " + err.Error())
	}
	defer conn.Close()
	c := healthpb.NewHealthClient(conn)
	for i := 0; i < n; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		_, err := c.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
		cancel()
		report("check", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream, err := c.Watch(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	if err == nil {
		_, err = stream.Recv()
	}
	report("watch", err)
}

// report prints "what CODE" and, on failure, the message on stderr.
func report(what string, err error) {
	code := status.Code(err)
	fmt.Printf("%s %v\n", what, code)
	if code != codes.OK {
		fmt.Fprintf(os.Stderr, "%s: %v\n", what, err)
	}
}
