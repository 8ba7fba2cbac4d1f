# Source on a bare GPU machine of the device tool: installs the carried wheels
# (.whl/, see README "Performance") into /tmp/site and checks that a jitted train
# step runs; if our pinned flax/optax/orbax do not import with the machine's jax,
# falls back to the machine's own. Sets PYTHONPATH and a `lusjax` function.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONUNBUFFERED=1 LUSJAX_CACHE=/tmp/lusjax-cache
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl 2>&1 | grep -v -i warning
export PYTHONPATH="/tmp/site:$PWD"
lusjax() { python3 -m lusjax.cli "$@"; }
smoke() {
  CUDA_VISIBLE_DEVICES=0 python3 -m lusjax.cli bench step --config configs/quickstart.py \
    --batch-size 16 --steps 1 --warmup 1 --config.data.synthetic.size=32 \
    --config.image_size=32 --config.aug.size=32 2>&1 | tail -3
}
if ! smoke | grep -q '"images_per_s"'; then
  echo "device_setup: smoke test failed with the carried flax/optax/orbax; using the machine's"
  rm -rf /tmp/site/flax* /tmp/site/optax* /tmp/site/orbax* /tmp/site/tensorstore*
  smoke
fi
python3 -c "import jax, flax, optax, orbax.checkpoint as o, grain, torch; print('versions: jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'orbax', o.__version__, 'grain', grain.__version__, 'torch', torch.__version__, jax.devices())"
