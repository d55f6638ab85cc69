// Command benthos is a minimal Benthos (Redpanda Connect's code base before its rename) built
// for hookpipe's peer benchmarks (perf/peers/build): only the components the backlog-asis job
// needs, the Kafka inputs, the io package with the http_client output, the pure processors, and
// Prometheus metrics (Benthos's default metrics, as hookpipe keeps its own), so the build stays
// small. Nothing here changes how those components work.
//
// The one knob added: Go's shared HTTP transport keeps at most 2 idle connections per host by
// default, and the http_client output (without TLS or a proxy) uses that transport. With more
// requests in flight than 2, every other request would open a new TCP connection instead of
// reusing a kept-alive one. HOOKPIPE_PEER_IDLE_CONNS_PER_HOST (default 1024, 0 keeps Go's
// default) raises that pool so the peer runs with HTTP/1.1 keep-alive like hookpipe does.
package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"

	"github.com/benthosdev/benthos/v4/public/service"

	_ "github.com/benthosdev/benthos/v4/public/components/io"
	_ "github.com/benthosdev/benthos/v4/public/components/kafka"
	_ "github.com/benthosdev/benthos/v4/public/components/prometheus"
	_ "github.com/benthosdev/benthos/v4/public/components/pure"
)

func main() {
	idle := 1024
	if v, ok := os.LookupEnv("HOOKPIPE_PEER_IDLE_CONNS_PER_HOST"); ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			fmt.Fprintf(os.Stderr, "HOOKPIPE_PEER_IDLE_CONNS_PER_HOST: %q is not a count of connections\n", v)
			os.Exit(2)
		}
		idle = n
	}
	if idle > 0 {
		if t, ok := http.DefaultTransport.(*http.Transport); ok {
			t.MaxIdleConns = 0 // no limit across hosts; the per-host limit below applies
			t.MaxIdleConnsPerHost = idle
		}
	}
	service.RunCLI(context.Background())
}
