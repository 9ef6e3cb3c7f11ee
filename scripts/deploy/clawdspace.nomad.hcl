# Nomad system job: one clawdspaced per client node (docs/OPERATIONS.md,
# "Fleet packaging"). Install the binary and the default image on every
# client first: `scripts/install --no-start` (then `systemctl disable
# clawdspace`, so that Nomad alone runs the daemon).
#
# raw_exec runs the daemon directly on the host, as root, like the systemd
# unit: it needs the host's cgroups, mounts and network. Enable the driver
# on the clients (plugin "raw_exec" { config { enabled = true } }).
# Validated by scripts/check-packaging (parsed and checked; no Nomad agent
# ran it here).

job "clawdspace" {
  type        = "system"
  datacenters = ["*"]

  constraint {
    attribute = "${attr.kernel.name}"
    value     = "linux"
  }

  update {
    max_parallel = 1
    stagger      = "30s"
  }

  group "clawdspaced" {
    # One per machine; the state directory is on the machine itself.
    restart {
      attempts = 10
      interval = "10m"
      delay    = "5s"
      mode     = "delay"
    }

    network {
      port "api" {
        static = 7777
      }
    }

    service {
      name     = "clawdspace"
      port     = "api"
      provider = "nomad"

      check {
        type     = "http"
        path     = "/api/health"
        interval = "15s"
        timeout  = "3s"
      }
    }

    task "clawdspaced" {
      driver = "raw_exec"

      config {
        command = "/usr/local/bin/clawdspaced"
      }

      env {
        CLAWDSPACE_STATE_DIR     = "/var/lib/clawdspace"
        CLAWDSPACE_LISTEN        = "${NOMAD_ADDR_api}"
        CLAWDSPACE_NODE_NAME     = "${node.unique.name}"
        CLAWDSPACE_TAILSCALE_TAG = "tag:clawdspace"
        NO_COLOR                 = "1"
        HOME                     = "/root"
      }

      # Spaces must outlive the daemon: SIGTERM to clawdspaced only, which
      # lets requests in flight finish (spaces keep running).
      kill_signal  = "SIGTERM"
      kill_timeout = "30s"

      resources {
        cpu    = 200
        memory = 256
      }
    }
  }
}
