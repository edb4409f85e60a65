"""llama-server from the distribution's packages on the Vulkan backend, one model already on each box."""

halo_serve = "llama-server"
halo_llama_source = "distro"
halo_llama_backend = "vulkan"
halo_model = "/srv/models/model.gguf"  # a GGUF file on each host
halo_ctx = 32768
