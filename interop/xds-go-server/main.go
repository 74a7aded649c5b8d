// Command xds-go-server is a small xDS control plane built on go-control-plane's
// SnapshotCache, used as a real peer by mesh-xds's interop tests.
//
// It serves ADS (state-of-the-world and delta) on 127.0.0.1:<-port> and is driven by
// JSON commands, one per line on stdin; each command gets one JSON reply line on stdout.
//
//	{"cmd":"set","version":"1","listeners":[...],"routes":[...],"clusters":[...],"endpoints":[...]}
//	{"cmd":"nacks"}      -> {"ok":true,"nacks":[{"type_url":..,"message":..,...}]}
//	{"cmd":"requests"}   -> every request seen (SotW and delta), oldest first
//	{"cmd":"stop"}       -> stops the gRPC server (open streams are cut), keeps the cache
//	{"cmd":"start"}      -> serves again on the same port
//
// On start it prints {"ready":true,"port":N}. It exits when stdin closes.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"sync"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	router "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Simple descriptions of resources; "raw" entries are Envoy protojson used as is.
type listenerSpec struct {
	Name        string `json:"name"`
	RouteConfig string `json:"route_config"`
}

type vhostSpec struct {
	Name    string   `json:"name"`
	Domains []string `json:"domains"`
	Prefix  string   `json:"prefix"`
	Cluster string   `json:"cluster"`
}

type routeSpec struct {
	Name   string      `json:"name"`
	VHosts []vhostSpec `json:"vhosts"`
}

type clusterSpec struct {
	Name string `json:"name"`
	// LbPolicy is an Envoy Cluster.LbPolicy enum name, default ROUND_ROBIN.
	LbPolicy string `json:"lb_policy"`
	// Type is an Envoy Cluster.DiscoveryType enum name, default EDS.
	Type string `json:"type"`
}

type endpointsSpec struct {
	Cluster string   `json:"cluster"`
	Addrs   []string `json:"addrs"`
}

type command struct {
	Cmd          string            `json:"cmd"`
	Version      string            `json:"version"`
	Listeners    []listenerSpec    `json:"listeners"`
	Routes       []routeSpec       `json:"routes"`
	Clusters     []clusterSpec     `json:"clusters"`
	Endpoints    []endpointsSpec   `json:"endpoints"`
	RawListeners []json.RawMessage `json:"raw_listeners"`
	RawRoutes    []json.RawMessage `json:"raw_routes"`
	RawClusters  []json.RawMessage `json:"raw_clusters"`
}

// seenRequest is one request the server received, as the tests want to inspect it.
type seenRequest struct {
	Delta            bool              `json:"delta"`
	Stream           int64             `json:"stream"`
	TypeURL          string            `json:"type_url"`
	VersionInfo      string            `json:"version_info"`
	Nonce            string            `json:"nonce"`
	Names            []string          `json:"names"`
	Unsubscribe      []string          `json:"unsubscribe,omitempty"`
	InitialVersions  map[string]string `json:"initial_versions,omitempty"`
	ErrorCode        int32             `json:"error_code,omitempty"`
	ErrorMessage     string            `json:"error_message,omitempty"`
	HasErrorDetail   bool              `json:"has_error_detail"`
	NodeID           string            `json:"node_id,omitempty"`
	ReceivedUnixNano int64             `json:"received_unix_nano"`
}

const maxSeen = 100000

type recorder struct {
	mu   sync.Mutex
	seen []seenRequest
}

func (r *recorder) add(s seenRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s.ReceivedUnixNano = time.Now().UnixNano()
	if len(r.seen) < maxSeen {
		r.seen = append(r.seen, s)
	}
}

func (r *recorder) all(onlyNacks bool) []seenRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := []seenRequest{}
	for _, s := range r.seen {
		if !onlyNacks || s.HasErrorDetail {
			out = append(out, s)
		}
	}
	return out
}

// allNodes puts every node on the same snapshot, whatever its id.
type allNodes struct{}

func (allNodes) ID(*core.Node) string { return "all" }

func adsSource() *core.ConfigSource {
	return &core.ConfigSource{
		ResourceApiVersion:    core.ApiVersion_V3,
		ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}},
	}
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err)
	}
	return a
}

func buildListener(s listenerSpec) *listener.Listener {
	manager := &hcm.HttpConnectionManager{
		StatPrefix: s.Name,
		RouteSpecifier: &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{
			ConfigSource:    adsSource(),
			RouteConfigName: s.RouteConfig,
		}},
		HttpFilters: []*hcm.HttpFilter{{
			Name:       "envoy.filters.http.router",
			ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(&router.Router{})},
		}},
	}
	return &listener.Listener{
		Name:        s.Name,
		ApiListener: &listener.ApiListener{ApiListener: mustAny(manager)},
	}
}

func buildRoute(s routeSpec) *route.RouteConfiguration {
	rc := &route.RouteConfiguration{Name: s.Name}
	for _, vh := range s.VHosts {
		prefix := vh.Prefix
		if prefix == "" {
			prefix = "/"
		}
		domains := vh.Domains
		if len(domains) == 0 {
			domains = []string{"*"}
		}
		rc.VirtualHosts = append(rc.VirtualHosts, &route.VirtualHost{
			Name:    vh.Name,
			Domains: domains,
			Routes: []*route.Route{{
				Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: prefix}},
				Action: &route.Route_Route{Route: &route.RouteAction{
					ClusterSpecifier: &route.RouteAction_Cluster{Cluster: vh.Cluster},
				}},
			}},
		})
	}
	return rc
}

func buildCluster(s clusterSpec) (*cluster.Cluster, error) {
	c := &cluster.Cluster{
		Name:           s.Name,
		ConnectTimeout: durationpb.New(time.Second),
	}
	typ := s.Type
	if typ == "" {
		typ = "EDS"
	}
	t, ok := cluster.Cluster_DiscoveryType_value[typ]
	if !ok {
		return nil, fmt.Errorf("unknown cluster type %q", typ)
	}
	c.ClusterDiscoveryType = &cluster.Cluster_Type{Type: cluster.Cluster_DiscoveryType(t)}
	if typ == "EDS" {
		c.EdsClusterConfig = &cluster.Cluster_EdsClusterConfig{EdsConfig: adsSource()}
	}
	lb := s.LbPolicy
	if lb == "" {
		lb = "ROUND_ROBIN"
	}
	l, ok := cluster.Cluster_LbPolicy_value[lb]
	if !ok {
		return nil, fmt.Errorf("unknown lb policy %q", lb)
	}
	c.LbPolicy = cluster.Cluster_LbPolicy(l)
	return c, nil
}

func buildEndpoints(s endpointsSpec) (*endpoint.ClusterLoadAssignment, error) {
	lb := &endpoint.LocalityLbEndpoints{}
	for _, a := range s.Addrs {
		host, portStr, err := net.SplitHostPort(a)
		if err != nil {
			return nil, fmt.Errorf("endpoint %q: %v", a, err)
		}
		var port uint32
		if _, err := fmt.Sscanf(portStr, "%d", &port); err != nil {
			return nil, fmt.Errorf("endpoint %q: bad port", a)
		}
		lb.LbEndpoints = append(lb.LbEndpoints, &endpoint.LbEndpoint{
			HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{
				Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
					Address:       host,
					PortSpecifier: &core.SocketAddress_PortValue{PortValue: port},
				}}},
			}},
		})
	}
	return &endpoint.ClusterLoadAssignment{ClusterName: s.Cluster, Endpoints: []*endpoint.LocalityLbEndpoints{lb}}, nil
}

func buildSnapshot(c command) (*cache.Snapshot, error) {
	res := map[resource.Type][]types.Resource{}
	for _, l := range c.Listeners {
		res[resource.ListenerType] = append(res[resource.ListenerType], buildListener(l))
	}
	for _, r := range c.Routes {
		res[resource.RouteType] = append(res[resource.RouteType], buildRoute(r))
	}
	for _, cl := range c.Clusters {
		built, err := buildCluster(cl)
		if err != nil {
			return nil, err
		}
		res[resource.ClusterType] = append(res[resource.ClusterType], built)
	}
	for _, e := range c.Endpoints {
		built, err := buildEndpoints(e)
		if err != nil {
			return nil, err
		}
		res[resource.EndpointType] = append(res[resource.EndpointType], built)
	}
	for _, raw := range c.RawListeners {
		m := &listener.Listener{}
		if err := protojson.Unmarshal(raw, m); err != nil {
			return nil, fmt.Errorf("raw listener: %v", err)
		}
		res[resource.ListenerType] = append(res[resource.ListenerType], m)
	}
	for _, raw := range c.RawRoutes {
		m := &route.RouteConfiguration{}
		if err := protojson.Unmarshal(raw, m); err != nil {
			return nil, fmt.Errorf("raw route: %v", err)
		}
		res[resource.RouteType] = append(res[resource.RouteType], m)
	}
	for _, raw := range c.RawClusters {
		m := &cluster.Cluster{}
		if err := protojson.Unmarshal(raw, m); err != nil {
			return nil, fmt.Errorf("raw cluster: %v", err)
		}
		res[resource.ClusterType] = append(res[resource.ClusterType], m)
	}
	return cache.NewSnapshot(c.Version, res)
}

type controlPlane struct {
	port    int
	cache   cache.SnapshotCache
	xds     server.Server
	mu      sync.Mutex
	grpcSrv *grpc.Server
}

func (cp *controlPlane) start() error {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.grpcSrv != nil {
		return fmt.Errorf("already serving")
	}
	var lis net.Listener
	var err error
	// The port of a stopped server may linger briefly; retry for a moment.
	for i := 0; i < 50; i++ {
		lis, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", cp.port))
		if err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	cp.port = lis.Addr().(*net.TCPAddr).Port
	g := grpc.NewServer()
	discovery.RegisterAggregatedDiscoveryServiceServer(g, cp.xds)
	cp.grpcSrv = g
	go func() { _ = g.Serve(lis) }()
	return nil
}

func (cp *controlPlane) stop() {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.grpcSrv != nil {
		cp.grpcSrv.Stop()
		cp.grpcSrv = nil
	}
}

func main() {
	port := flag.Int("port", 0, "port to serve ADS on (127.0.0.1); 0 picks one")
	ads := flag.Bool("ads", false, "SnapshotCache ADS mode (SotW replies only when the request names every snapshot resource)")
	flag.Parse()
	log.SetOutput(os.Stderr)

	rec := &recorder{}
	callbacks := server.CallbackFuncs{
		StreamRequestFunc: func(id int64, req *discovery.DiscoveryRequest) error {
			s := seenRequest{
				Stream: id, TypeURL: req.GetTypeUrl(), VersionInfo: req.GetVersionInfo(),
				Nonce: req.GetResponseNonce(), Names: req.GetResourceNames(), NodeID: req.GetNode().GetId(),
			}
			if e := req.GetErrorDetail(); e != nil {
				s.HasErrorDetail, s.ErrorCode, s.ErrorMessage = true, e.GetCode(), e.GetMessage()
			}
			rec.add(s)
			return nil
		},
		StreamDeltaRequestFunc: func(id int64, req *discovery.DeltaDiscoveryRequest) error {
			s := seenRequest{
				Delta: true, Stream: id, TypeURL: req.GetTypeUrl(), Nonce: req.GetResponseNonce(),
				Names: req.GetResourceNamesSubscribe(), Unsubscribe: req.GetResourceNamesUnsubscribe(),
				InitialVersions: req.GetInitialResourceVersions(), NodeID: req.GetNode().GetId(),
			}
			if e := req.GetErrorDetail(); e != nil {
				s.HasErrorDetail, s.ErrorCode, s.ErrorMessage = true, e.GetCode(), e.GetMessage()
			}
			rec.add(s)
			return nil
		},
	}
	snapshots := cache.NewSnapshotCache(*ads, allNodes{}, nil)
	cp := &controlPlane{port: *port, cache: snapshots, xds: server.NewServer(context.Background(), snapshots, callbacks)}
	if err := cp.start(); err != nil {
		log.Fatalf("listen: %v", err)
	}

	out := json.NewEncoder(os.Stdout)
	_ = out.Encode(map[string]any{"ready": true, "port": cp.port})

	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 256<<20)
	for in.Scan() {
		var c command
		if err := json.Unmarshal(in.Bytes(), &c); err != nil {
			_ = out.Encode(map[string]any{"ok": false, "error": err.Error()})
			continue
		}
		reply := map[string]any{"ok": true}
		switch c.Cmd {
		case "set":
			snap, err := buildSnapshot(c)
			if err == nil {
				err = snapshots.SetSnapshot(context.Background(), "all", snap)
			}
			if err != nil {
				reply = map[string]any{"ok": false, "error": err.Error()}
			}
		case "nacks":
			reply["nacks"] = rec.all(true)
		case "requests":
			reply["requests"] = rec.all(false)
		case "stop":
			cp.stop()
		case "start":
			if err := cp.start(); err != nil {
				reply = map[string]any{"ok": false, "error": err.Error()}
			}
			reply["port"] = cp.port
		default:
			reply = map[string]any{"ok": false, "error": fmt.Sprintf("unknown command %q", c.Cmd)}
		}
		_ = out.Encode(reply)
	}
	cp.stop()
}
