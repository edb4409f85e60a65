"""Every file halofleet manages on a host, in one place (the probe hashes them all in its one round trip)."""

GRUB_DROPIN = "/etc/default/grub.d/zz-halofleet.cfg"  # sorts after the user's own drop-ins
MODPROBE_FILE = "/etc/modprobe.d/zz-halofleet.conf"  # modprobe.d is read in lexical order: ours must come last
ROCM_SOURCES = "/etc/apt/sources.list.d/halofleet-rocm.sources"  # deb822: legacy and TheRock 10.x
ROCM_LIST = "/etc/apt/sources.list.d/halofleet-rocm.list"  # one-line, as AMD documents TheRock 7.14
ROCM_KEY = "/etc/apt/keyrings/halofleet-rocm.asc"  # legacy: ASCII-armored
ROCM_KEY_THEROCK = "/etc/apt/keyrings/halofleet-amdrocm.gpg"  # 7.x TheRock: binary keyring
ROCM_KEY_THEROCK_STABLE = "/etc/apt/keyrings/halofleet-amdrocm-stable.gpg"  # 10.x TheRock: binary keyring
ROCM_PIN = "/etc/apt/preferences.d/halofleet-rocm"
# The ROCm stage writes the sources file and key of one stream and removes the others'.
ROCM_REPO_FILES = (ROCM_SOURCES, ROCM_LIST, ROCM_KEY, ROCM_KEY_THEROCK, ROCM_KEY_THEROCK_STABLE)

MANAGED_FILES = (GRUB_DROPIN, MODPROBE_FILE, *ROCM_REPO_FILES, ROCM_PIN)

# Serving: one service name whatever the flavour, so switching flavours replaces rather than adds an engine.
SERVE_SERVICE = "halo-serve.service"
SERVE_UNIT = "/etc/systemd/system/halo-serve.service"  # llama-server from distro packages
SERVE_QUADLET = "/etc/containers/systemd/halo-serve.container"  # toolbox and vLLM images
SERVE_ENV = "/etc/halofleet/serve.env"  # 0600: the API key
SERVE_CONF = "/etc/halofleet/serve.conf"  # 0644: what is served where, for the verification facts
SERVE_STAMP = "/var/lib/halofleet/serve.stamp"  # the model the running engine was started with
SERVE_CACHE = "/var/lib/halofleet/cache"  # HF / vLLM / Triton caches of the containers

BENCH_RESULT = "/var/lib/halofleet/bench.json"  # last llama-bench run, read by verify/report

MODELS_PRESET = "/etc/halofleet/models.ini"  # 0644: llama-server's router preset (halo_models)
HF_HEADER = "/etc/halofleet/hf.header"  # 0600 root: the Hub token as a header line, fed to curl on stdin

MANAGED_FILES += (SERVE_UNIT, SERVE_QUADLET, SERVE_ENV, SERVE_CONF, SERVE_STAMP, MODELS_PRESET, HF_HEADER)
# llama.cpp RPC workers: ggml-rpc-server, behind a firewall unit that loads our own nftables table first.
RPC_SERVICE = "halo-rpc.service"
RPC_UNIT = "/etc/systemd/system/halo-rpc.service"
RPC_FIREWALL_SERVICE = "halo-rpc-firewall.service"
RPC_FIREWALL_UNIT = "/etc/systemd/system/halo-rpc-firewall.service"
RPC_NFT = "/etc/halofleet/rpc.nft"  # table inet halofleet_rpc only: the user's ruleset is never touched
RPC_CACHE = "/var/lib/halofleet/rpc-cache"  # LLAMA_CACHE of ggml-rpc-server -c (it adds rpc/)
MANAGED_FILES += (RPC_UNIT, RPC_FIREWALL_UNIT, RPC_NFT)
# The gateway (halo_gateway): Debian's haproxy reads this file; the certificate holds its private key.
HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"
GATEWAY_CERT = "/etc/haproxy/halofleet-gateway.pem"

# Never read for a diff, whatever the operation (writing, removing): their content is secret.
SECRET_FILES = frozenset({SERVE_ENV, HF_HEADER, GATEWAY_CERT})

# Backups (halofleet.operations.halo_files): the user's originals once, at first touch; every replaced version.
BACKUP_DIR = "/var/backups/halofleet"
BACKUP_ORIGINALS = f"{BACKUP_DIR}/original"
BACKUP_GENERATIONS = f"{BACKUP_DIR}/generations"
CONFIG_DIR = "/etc/halofleet"  # created by halofleet for its own files; the rollback removes it once empty
# Verified model files (path and pushed sources): one record per file, named by the SHA-256 of its path, holding
# "<sha256> <size> <mtime> <ctime> <inode>": while the file's stat still says so, the next run does not hash it.
VERIFIED_DIR = "/var/lib/halofleet/verified"
