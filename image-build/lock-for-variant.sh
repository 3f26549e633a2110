#!/bin/sh
# Print the requirements lock for one image variant.
#   cuda: the lock as it is (PyPI's torch wheels bundle CUDA through the nvidia-* packages).
#   cpu:  without torch, torchvision, triton and the CUDA runtime packages; the Dockerfile
#         installs torch and torchvision from the CPU wheel index at the locked versions.
# usage: lock-for-variant.sh cpu|cuda < requirements.lock > requirements.variant.txt
set -eu
case "${1:-}" in
  cuda) cat ;;
  cpu) grep -v -E '^(torch|torchvision|triton)==|^(nvidia-(cu|n)[a-z0-9-]*|cuda-[a-z0-9-]+)==' ;;
  *) echo "usage: $0 cpu|cuda < requirements.lock" >&2; exit 2 ;;
esac
