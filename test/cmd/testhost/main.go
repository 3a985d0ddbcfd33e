// Command testhost is the end-to-end tests' own container image (wsscale/testhost on the local
// cluster): a small HTTP server that shows the tests what a pod sees from the inside, its files,
// environment and network, so that what the node agent gives a pod is checked from the pod.
//
//	testhost serve --port 8080 [--grpc-port 9090]
//	testhost step [--append P=D] [--once P] [--sleep D] [--exit N]
//
// serve runs until SIGTERM. With --grpc-port it also serves the gRPC health service
// (grpc.health.v1), SERVING until /grpc-health changes it, for gRPC probes.
//
// step is a short-lived container (an init container, a crashing one): it appends D to file P,
// then with --once P exits 1 if P does not exist yet (creating it, so that the next run
// succeeds), sleeps D and exits with N.
//
// Endpoints (all GET, answers are plain text; an error is a 4xx/5xx with the reason):
//
//	/cat?path=P           the content of file P
//	/write?path=P&data=D  writes D to P (creating the file), answers "ok"
//	/env?name=N           the value of environment variable N
//	/hostname             the hostname
//	/log?line=L           prints L on standard output (the container log), answers "ok"
//	/exit?code=N          exits with code N once the answer is sent
//	/resolve?name=N       the addresses N resolves to through the pod's /etc/resolv.conf, one a line
//	/fetch?url=U          the body of an HTTP GET of U from inside the pod
//	/healthz              "ok"
//	/grpc-health?status=S sets the gRPC health status (SERVING or NOT_SERVING), answers "ok"
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	healthpkg "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func main() {
	if len(os.Args) >= 2 && os.Args[1] == "step" {
		os.Exit(step(os.Args[2:]))
	}
	if len(os.Args) < 2 || os.Args[1] != "serve" {
		fmt.Fprintln(os.Stderr, "usage: testhost serve [--port N] [--grpc-port N] | testhost step [--append P=D] [--once P] [--sleep D] [--exit N]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	port := fs.Int("port", 8080, "port to listen on")
	grpcPort := fs.Int("grpc-port", 0, "port of the gRPC health service (0: none)")
	_ = fs.Parse(os.Args[2:])

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	grpcAddr := ""
	if *grpcPort > 0 {
		grpcAddr = net.JoinHostPort("", strconv.Itoa(*grpcPort))
	}
	if err := serve(ctx, net.JoinHostPort("", strconv.Itoa(*port)), grpcAddr); err != nil {
		fmt.Fprintln(os.Stderr, "testhost:", err)
		os.Exit(1)
	}
}

// step is one short run of a container: see the package comment.
func step(args []string) int {
	fs := flag.NewFlagSet("step", flag.ExitOnError)
	appendTo := fs.String("append", "", "P=D: append D and a newline to file P")
	once := fs.String("once", "", "exit 1 when this file does not exist yet, creating it")
	sleep := fs.Duration("sleep", 0, "how long to run")
	code := fs.Int("exit", 0, "exit code")
	_ = fs.Parse(args)
	if *appendTo != "" {
		path, data, _ := strings.Cut(*appendTo, "=")
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err == nil {
			_, err = fmt.Fprintln(f, data)
			f.Close()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "testhost step:", err)
			return 2
		}
	}
	if *once != "" {
		if _, err := os.Stat(*once); os.IsNotExist(err) {
			if err := os.WriteFile(*once, nil, 0o644); err != nil {
				fmt.Fprintln(os.Stderr, "testhost step:", err)
				return 2
			}
			fmt.Println("testhost step: first run, failing")
			return 1
		}
	}
	time.Sleep(*sleep)
	fmt.Println("testhost step: done, exit", *code)
	return *code
}

func serve(ctx context.Context, addr, grpcAddr string) error {
	health := healthpkg.NewServer()
	srv := &http.Server{Addr: addr, Handler: newMux(health), ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 2)
	go func() { errc <- srv.ListenAndServe() }()
	fmt.Println("testhost: serving on", addr)
	if grpcAddr != "" {
		lis, err := net.Listen("tcp", grpcAddr)
		if err != nil {
			return fmt.Errorf("listen for gRPC: %w", err)
		}
		gs := grpc.NewServer()
		healthpb.RegisterHealthServer(gs, health)
		go func() { errc <- gs.Serve(lis) }()
		defer gs.Stop()
		fmt.Println("testhost: serving gRPC health on", grpcAddr)
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(shutdown); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
}

func newMux(health *healthpkg.Server) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/grpc-health", func(w http.ResponseWriter, r *http.Request) {
		st, ok := healthpb.HealthCheckResponse_ServingStatus_value[r.URL.Query().Get("status")]
		if !ok {
			http.Error(w, "status: want SERVING or NOT_SERVING", http.StatusBadRequest)
			return
		}
		health.SetServingStatus("", healthpb.HealthCheckResponse_ServingStatus(st))
		fmt.Fprint(w, "ok")
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "ok") })
	mux.HandleFunc("/cat", func(w http.ResponseWriter, r *http.Request) {
		data, err := os.ReadFile(r.URL.Query().Get("path"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		_, _ = w.Write(data)
	})
	mux.HandleFunc("/write", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if err := os.WriteFile(q.Get("path"), []byte(q.Get("data")), 0o644); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, "ok")
	})
	mux.HandleFunc("/env", func(w http.ResponseWriter, r *http.Request) {
		v, ok := os.LookupEnv(r.URL.Query().Get("name"))
		if !ok {
			http.Error(w, "not set", http.StatusNotFound)
			return
		}
		fmt.Fprint(w, v)
	})
	mux.HandleFunc("/log", func(w http.ResponseWriter, r *http.Request) {
		fmt.Println(r.URL.Query().Get("line"))
		fmt.Fprint(w, "ok")
	})
	mux.HandleFunc("/exit", func(w http.ResponseWriter, r *http.Request) {
		code, err := strconv.Atoi(r.URL.Query().Get("code"))
		if err != nil {
			http.Error(w, "code: "+err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprint(w, "ok")
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		go func() {
			time.Sleep(100 * time.Millisecond) // let the answer leave
			os.Exit(code)
		}()
	})
	mux.HandleFunc("/resolve", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		resolver := &net.Resolver{PreferGo: true}
		addrs, err := resolver.LookupHost(ctx, r.URL.Query().Get("name"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		sort.Strings(addrs)
		fmt.Fprint(w, strings.Join(addrs, "\n"))
	})
	mux.HandleFunc("/fetch", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL.Query().Get("url"), nil)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		// A new connection per fetch, so that a Service spreads fetches as it spreads connections.
		resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, io.LimitReader(resp.Body, 1<<20))
	})
	mux.HandleFunc("/hostname", func(w http.ResponseWriter, _ *http.Request) {
		h, err := os.Hostname()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, h)
	})
	return mux
}
