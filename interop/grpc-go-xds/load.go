package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// load runs n closed loops of Health/Check on one channel (as the benchmark's mesh case
// shares one channel between its lanes): warm unmeasured, then secs measured.
func load(target string, n int, warm, secs time.Duration) {
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
	// The first call waits for xDS and the connection: not part of the load.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	_, err = c.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	cancel()
	if err != nil {
		fail("first call: " + err.Error())
	}

	var measuring atomic.Bool
	var errs atomic.Int64
	var firstErr atomic.Value
	stop := time.Now().Add(warm + secs)
	lat := make([][]time.Duration, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for time.Now().Before(stop) {
				start := time.Now()
				_, err := c.Check(context.Background(), &healthpb.HealthCheckRequest{})
				if !measuring.Load() {
					continue
				}
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				lat[i] = append(lat[i], time.Since(start))
			}
		}(i)
	}
	time.Sleep(warm)
	cpu0 := cpuTime()
	t0 := time.Now()
	measuring.Store(true)
	wg.Wait()
	elapsed := time.Since(t0)
	cpu := cpuTime() - cpu0

	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	q := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[int(p*float64(len(all)-1))].Microseconds())
	}
	fmt.Printf("ok %d errors %d rps %.1f p50_us %.0f p90_us %.0f p99_us %.0f max_us %.0f cpu_ms %.1f\n",
		len(all), errs.Load(), float64(len(all))/elapsed.Seconds(), q(0.50), q(0.90), q(0.99), q(1.0),
		float64(cpu.Microseconds())/1e3)
	if e, ok := firstErr.Load().(string); ok {
		fmt.Fprintln(os.Stderr, "first error: "+e)
	}
}

// cpuTime is this process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
