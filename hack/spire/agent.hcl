# SPIRE agent of the local cluster (hack/cluster): a template, each @NAME@ replaced before use.
agent {
  data_dir = "@DATA_DIR@"
  log_level = "INFO"
  server_address = "127.0.0.1"
  server_port = "@SERVER_PORT@"
  # The Workload API. Its folder reaches each dispatch pod's worker container only, through the
  # CSI driver csi.vexa.ai (csi/); the agent container never sees it.
  socket_path = "@SOCKET_PATH@"
  trust_domain = "@TRUST_DOMAIN@"
  # The server's bundle, read from its admin socket by hack/cluster (no insecure bootstrap).
  trust_bundle_path = "@TRUST_BUNDLE@"
  # A new dispatch pod's entry reaches the agent at its next sync: every second here instead of
  # SPIRE's 5 s, since each dispatch waits for it (one cheap call a second to a local server).
  experimental {
    sync_interval = "1s"
  }
}

plugins {
  NodeAttestor "join_token" {
    plugin_data {}
  }
  # The agent's key and SVID stay in its data folder, so a restart needs no new join token.
  KeyManager "disk" {
    plugin_data {
      directory = "@DATA_DIR@"
    }
  }
  # Pods: the agent asks this node's kubelet which pod and container a caller's process is in
  # (selectors k8s:pod-uid:…, k8s:container-name:…). It reaches the kubelet at the node's IP,
  # verifies the kubelet's serving certificate against the cluster CA, and logs in with its own
  # client certificate (user vexa:spire-agent, which may only read the kubelet's pod list).
  WorkloadAttestor "k8s" {
    plugin_data {
      kubelet_secure_port = 10250
      node_name = "@KUBELET_HOST@"
      kubelet_ca_path = "@KUBELET_CA@"
      certificate_path = "@CLIENT_CERT@"
      private_key_path = "@CLIENT_KEY@"
    }
  }
}
