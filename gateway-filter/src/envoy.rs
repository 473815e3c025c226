//! The Envoy configuration in front of the filter, generated here so that the evals, the
//! benchmark and `vexa-gateway-filter envoy-config` run the same one (the chart's ConfigMap
//! follows the same shape): a TLS listener that requires a client certificate from the SPIRE
//! bundle, `forward_client_cert_details: SANITIZE_SET`, ext_authz over gRPC to the filter with
//! the buffered body (at most [`crate::MAX_BODY`], never partial) and the peer certificate,
//! failing closed; then a dynamic forward proxy to the `:authority` and `:path` the filter
//! rewrote to the Tool's server URL (the filter also removes every `x-vexa-*` header the client
//! sent: Envoy's `request_headers_to_remove` takes exact names only).

use std::fmt::Write;

/// Where things are for one Envoy.
#[derive(Debug, Clone)]
pub struct EnvoyConfig {
    /// Listen address of the TLS listener (`ip`).
    pub listen_ip: String,
    /// Its port.
    pub listen_port: u16,
    /// The gateway's certificate chain (an SVID naming `spiffe://<td>/vexa/gateway`), PEM file.
    pub cert_chain: String,
    /// Its private key, PEM file.
    pub private_key: String,
    /// The SPIRE trust bundle: the CAs client certificates must chain to, PEM file.
    pub trust_bundle: String,
    /// The trust domain a client's SPIFFE ID must be in.
    pub trust_domain: String,
    /// The filter's gRPC address (`ip:port`).
    pub filter_addr: String,
    /// Envoy's admin port on 127.0.0.1 (0: any).
    pub admin_port: u16,
}

/// The Envoy bootstrap YAML for `c`.
pub fn config(c: &EnvoyConfig) -> String {
    let (filter_ip, filter_port) = c
        .filter_addr
        .rsplit_once(':')
        .unwrap_or((c.filter_addr.as_str(), "0"));
    let mut y = String::new();
    let _ = write!(
        y,
        r#"static_resources:
  listeners:
    - name: tools
      address:
        socket_address: {{address: {listen_ip}, port_value: {listen_port}}}
      filter_chains:
        - transport_socket:
            name: envoy.transport_sockets.tls
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
              require_client_certificate: true
              common_tls_context:
                tls_params: {{tls_minimum_protocol_version: TLSv1_3}}
                tls_certificates:
                  - certificate_chain: {{filename: "{cert}"}}
                    private_key: {{filename: "{key}"}}
                validation_context:
                  trusted_ca: {{filename: "{bundle}"}}
                  match_typed_subject_alt_names:
                    - san_type: URI
                      matcher: {{prefix: "spiffe://{td}/"}}
          filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: tools
                forward_client_cert_details: SANITIZE_SET
                set_current_client_cert_details: {{uri: true}}
                route_config:
                  name: tools
                  virtual_hosts:
                    - name: tools
                      domains: ["*"]
                      routes:
                        - match: {{prefix: /}}
                          route:
                            cluster: tools
                            timeout: 30s
                http_filters:
                  - name: envoy.filters.http.ext_authz
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
                      transport_api_version: V3
                      failure_mode_allow: false
                      include_peer_certificate: true
                      clear_route_cache: true
                      with_request_body:
                        max_request_bytes: {max_body}
                        allow_partial_message: false
                        pack_as_bytes: true
                      grpc_service:
                        envoy_grpc: {{cluster_name: gateway-filter}}
                        timeout: 5s
                  - name: envoy.filters.http.dynamic_forward_proxy
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_forward_proxy.v3.FilterConfig
                      dns_cache_config: {{name: tools, dns_lookup_family: V4_PREFERRED}}
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: gateway-filter
      type: STATIC
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config: {{http2_protocol_options: {{}}}}
      load_assignment:
        cluster_name: gateway-filter
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {{address: {filter_ip}, port_value: {filter_port}}}
    - name: tools
      lb_policy: CLUSTER_PROVIDED
      cluster_type:
        name: envoy.clusters.dynamic_forward_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.clusters.dynamic_forward_proxy.v3.ClusterConfig
          dns_cache_config: {{name: tools, dns_lookup_family: V4_PREFERRED}}
admin:
  address:
    socket_address: {{address: 127.0.0.1, port_value: {admin_port}}}
"#,
        listen_ip = c.listen_ip,
        listen_port = c.listen_port,
        cert = c.cert_chain,
        key = c.private_key,
        bundle = c.trust_bundle,
        td = c.trust_domain,
        max_body = crate::MAX_BODY,
        admin_port = c.admin_port,
    );
    y
}
