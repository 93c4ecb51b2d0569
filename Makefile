# The README's two commands: `make` (build everything, run the demo) and `make test`.
.PHONY: all build demo test bench clean

all: demo

build:
	bash packaging/bootstrap.sh

demo: build
	.venv/bin/python -m tincapp.demo

test: build
	bash packaging/run-tests.sh

bench: build
	.venv/bin/python bench/bench_record.py
	.venv/bin/python bench/bench_replay.py
	.venv/bin/python bench/bench_batchio.py
	.venv/bin/python bench/bench_tunnel.py

clean:
	rm -rf build dist .venv tincapp/_*.so pyx/*.c
