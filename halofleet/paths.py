"""Every file halofleet manages on a host, in one place (the probe hashes them all in its one round trip)."""

GRUB_DROPIN = "/etc/default/grub.d/zz-halofleet.cfg"  # sorts after the user's own drop-ins
MODPROBE_FILE = "/etc/modprobe.d/zz-halofleet.conf"  # modprobe.d is read in lexical order: ours must come last
ROCM_SOURCES = "/etc/apt/sources.list.d/halofleet-rocm.sources"
ROCM_KEY = "/etc/apt/keyrings/halofleet-rocm.asc"
ROCM_PIN = "/etc/apt/preferences.d/halofleet-rocm"

MANAGED_FILES = (GRUB_DROPIN, MODPROBE_FILE, ROCM_SOURCES, ROCM_KEY, ROCM_PIN)
