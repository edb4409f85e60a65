"""vLLM from the gfx1151 toolbox image (it carries its own ROCm); needs a kernel with the CWSR fix."""

halo_serve = "vllm"
halo_cwsr_policy = "enforce"
halo_model = "Qwen/Qwen3-8B"  # fetched by vLLM into /var/lib/halofleet/cache
halo_vllm_gpu_memory_utilization = 0.85
halo_ctx = 16384
