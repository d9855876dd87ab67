# The two commands: `make run` (the main job) and `make test`. Both set up what they need.
.PHONY: setup build run test bench bench-disk bench-load bench-load-pass doctor clean

SWIFT_BUILD_FLAGS ?=

setup:
	@bash scripts/setup.sh

build: setup
	swift build -c release $(SWIFT_BUILD_FLAGS)

## The main job: probe the host, then run the engine end to end on this machine.
run: build
	@bash scripts/run.sh

doctor: build
	.build/release/vmfork doctor

test:
	@bash scripts/test.sh

## Benchmarks (package-benchmark), in their own package so tests do not build the harness.
bench: build
	cd Benchmarks && swift package --allow-writing-to-package-directory benchmark $(BENCH_ARGS)
	bash scripts/bench-disk.sh

## Disk I/O side by side: our VMDK path, qemu-img bench, fio on raw (medians, one table).
bench-disk: build
	bash scripts/bench-disk.sh

## Load runs: each runner's highest launch rate with p99 fork → exit under 5 ms (vmfork, native, runc).
bench-load: build
	bash scripts/load-sweep.sh

## Load runs: how often each side sustains a given rate (STEPS="vmfork:6000 native:3000", ROUNDS=8).
bench-load-pass: build
	bash scripts/load-pass-rate.sh

clean:
	rm -rf .build Benchmarks/.build
