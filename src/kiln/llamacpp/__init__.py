"""--target llama.cpp: GGUF files made and measured by the pinned llama.cpp, built once per CPU."""
