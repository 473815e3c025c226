# SPIRE server of the local cluster (hack/cluster) and of the vexa-spire crate's tests.
# A template: hack/cluster and spire/src/testing.rs replace each @NAME@ before use.
# Only the admin socket is an admin interface; whoever may open it administers the server,
# so its folder's permissions are the access control (see hack/README.md, "Pod identity").
server {
  bind_address = "127.0.0.1"
  bind_port = "@BIND_PORT@"
  socket_path = "@SOCKET_PATH@"
  trust_domain = "@TRUST_DOMAIN@"
  data_dir = "@DATA_DIR@"
  log_level = "INFO"
  # Workload SVIDs live an hour (the agent renews them); the CA rotates daily.
  default_x509_svid_ttl = "1h"
  ca_ttl = "24h"
  # Agents fetch entries from the server's in-memory entry cache, which reads the datastore's
  # entry events every cache_reload_interval (5 s by default): a new dispatch pod's entry would
  # wait up to that long before any agent can issue its SVID. One cheap indexed read a second
  # on a local sqlite file instead.
  experimental {
    cache_reload_interval = "1s"
  }
}

plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = "@DATA_DIR@/datastore.sqlite3"
    }
  }
  # Keys on disk (0600 in the data folder): a restart keeps the CA, so agents and SVIDs stay valid.
  KeyManager "disk" {
    plugin_data {
      keys_path = "@DATA_DIR@/keys.json"
    }
  }
  # The local cluster's one agent joins with a one-time token (hack/cluster makes it); the
  # production shape is k8s_psat (see hack/README.md).
  NodeAttestor "join_token" {
    plugin_data {}
  }
}
