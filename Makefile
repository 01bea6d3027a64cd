# One Makefile that CI calls (.ci/run -> make test).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv run test lint typecheck unit unit39 bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: venv
	$(BIN)/apigee-tls-exporter demo

# The demo writer, the daemon, Prometheus and Alertmanager on loopback with the shipped configs
# (needs the Debian packages prometheus and prometheus-alertmanager); prints their URLs.
.PHONY: demo-stack
demo-stack: venv
	$(BIN)/python bench/demo_stack.py

lint: venv
	$(BIN)/ruff check daemon tests bench
	$(BIN)/ruff format --check daemon tests bench

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest -q

# The unit tests again on Python 3.9 (RHEL 9's system Python), when one is found: pyenv's or PY39.
PY39   ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.9*/bin/python3.9) $(shell command -v python3.9))
VENV39 ?= .venv39

$(VENV39)/.installed: pyproject.toml
	$(PY39) -m venv $(VENV39)
	$(VENV39)/bin/pip install --quiet --upgrade pip
	$(VENV39)/bin/pip install --quiet -e '.[test]'
	touch $@

unit39:
ifeq ($(PY39),)
	@echo "unit39: no Python 3.9 found (set PY39=/path/to/python3.9); skipping the 3.9 run"
else
	$(MAKE) $(VENV39)/.installed
	$(VENV39)/bin/pytest -q -m "not slow"
endif

test: lint typecheck unit unit39

bench: venv
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) $(VENV39) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache

# --- install and dist ------------------------------------------------------------------------
# make dist [WHEEL_PYTHON=3.9] [WHEEL_GLIBC=2.28] [WHEEL_ARCH=x86_64]
#   dist/wheelhouse: the package's wheel and binary wheels of every dependency for the target
#   (by default this machine's Python version, glibc 2.28 or newer: RHEL/Rocky/Oracle 8 and 9,
#   Debian 11+, Ubuntu 20.04+); dist/apigee-tls-exporter.pyz: a single-file zipapp for the same
#   target (see packaging/pyz_main.py).
# make install [DESTDIR=/staging] [PREFIX=/opt/apigee-tls-exporter]
#   A venv at $(PREFIX) with the package and its dependencies, installed offline from the
#   wheelhouse (the same path as the documented offline install; the target must be this
#   machine); the systemd unit, the sysusers file and, unless one exists, the default config.
PREFIX       ?= /opt/apigee-tls-exporter
DESTDIR      ?=
UNITDIR      ?= /etc/systemd/system
SYSUSERSDIR  ?= /etc/sysusers.d
CONFDIR      ?= /etc/apigee-tls-exporter
WHEEL_PYTHON ?= $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
WHEEL_GLIBC  ?= 2.28
WHEEL_ARCH   ?= x86_64
WHEELHOUSE   := dist/wheelhouse
PYZ          := dist/apigee-tls-exporter.pyz
PKG_SOURCES  := pyproject.toml $(wildcard daemon/*.py)
DEST         := $(if $(DESTDIR),$(abspath $(DESTDIR)))
TARGET       := $(DEST)$(PREFIX)
# pip takes platform tags literally: list every manylinux tag up to the target's glibc.
WHEEL_FLAGS   = --only-binary=:all: --implementation cp --python-version $(WHEEL_PYTHON) \
	$(shell $(PYTHON) -c 'import sys; a, g = sys.argv[1], int(sys.argv[2].split(".")[1]); \
	print(" ".join(f"--platform manylinux_2_{m}_{a}" for m in range(g, 16, -1)), \
	f"--platform manylinux2014_{a} --platform manylinux2010_{a} --platform manylinux1_{a}")' \
	$(WHEEL_ARCH) $(WHEEL_GLIBC))

.PHONY: install dist wheelhouse pyz

dist: wheelhouse pyz

wheelhouse: $(WHEELHOUSE)/.built

$(WHEELHOUSE)/.built: $(PKG_SOURCES) | $(STAMP)
	rm -rf $(WHEELHOUSE)
	$(BIN)/pip wheel --quiet --no-deps --wheel-dir $(WHEELHOUSE) .
	$(BIN)/pip download --quiet $(WHEEL_FLAGS) --dest $(WHEELHOUSE) \
		"$$(ls $(WHEELHOUSE)/apigee_tls_exporter-*.whl)[fast]"
	touch $@

pyz: $(PYZ)

# Pure-Python packages stay at the top of the archive and import from it; packages holding
# compiled modules go under _native/, which the bootstrap extracts to a cache at first start.
$(PYZ): $(WHEELHOUSE)/.built packaging/pyz_main.py
	rm -rf build/pyz && mkdir -p build/pyz/_native
	$(BIN)/pip install --quiet --no-compile --no-index --find-links $(WHEELHOUSE) \
		$(WHEEL_FLAGS) --target build/pyz apigee-tls-exporter
	rm -rf build/pyz/bin
	cd build/pyz && for entry in *; do \
		[ "$$entry" = _native ] && continue; \
		if [ -n "$$(find "$$entry" -name '*.so' -print -quit)" ]; then mv "$$entry" _native/; fi; \
	done
	echo "cp$(subst .,,$(WHEEL_PYTHON)) $(WHEEL_ARCH)" > build/pyz/_native/BUILD
	cp packaging/pyz_main.py build/pyz/__main__.py
	find build/pyz -name __pycache__ -prune -exec rm -rf {} +
	$(BIN)/python -m zipapp build/pyz --output $@ --python '/usr/bin/env python3' --compress

# The launcher finds the venv's Python next to itself, so the tree works both where it is staged
# (DESTDIR) and where it ends up; pip's own scripts are pointed at $(PREFIX). Without DESTDIR
# (the real system) the user is created at once and systemd re-reads its units.
install: wheelhouse
	@test -f config/apigee-tls-exporter.yml || \
		{ echo "make install: config/apigee-tls-exporter.yml is missing" >&2; exit 1; }
	$(PYTHON) -m venv $(TARGET)
	$(TARGET)/bin/python3 -m pip install --quiet --no-index --find-links $(WHEELHOUSE) \
		--force-reinstall apigee-tls-exporter
	printf '%s\n' '#!/bin/sh' \
		'exec "$$(dirname -- "$$(readlink -f -- "$$0")")/python3" -m apigee_tls_exporter "$$@"' \
		> $(TARGET)/bin/apigee-tls-exporter
	chmod 0755 $(TARGET)/bin/apigee-tls-exporter
	if [ -n "$(DESTDIR)" ]; then \
		find $(TARGET)/bin -maxdepth 1 -type f -exec grep -Il '$(TARGET)' {} + \
			| xargs -r sed -i 's|$(TARGET)|$(PREFIX)|g'; \
		sed -i 's|$(TARGET)|$(PREFIX)|g' $(TARGET)/pyvenv.cfg; \
	fi
	mkdir -p build
	sed -e 's|/opt/apigee-tls-exporter|$(PREFIX)|g' -e 's|/etc/apigee-tls-exporter|$(CONFDIR)|g' \
		systemd/apigee-tls-exporter.service > build/apigee-tls-exporter.service
	install -D -m 0644 build/apigee-tls-exporter.service \
		$(DEST)$(UNITDIR)/apigee-tls-exporter.service
	install -D -m 0644 systemd/apigee-tls-exporter.sysusers.conf \
		$(DEST)$(SYSUSERSDIR)/apigee-tls-exporter.conf
	install -d -m 0755 $(DEST)$(CONFDIR)
	# The reference config, but listening on loopback only: opening /metrics to the network is
	# the operator's choice (README, "Securing /metrics, and the default listen address").
	test -e $(DEST)$(CONFDIR)/config.yml || { \
		sed 's|^listen: ":9847"$$|listen: "127.0.0.1:9847"  # installed default: loopback only|' \
			config/apigee-tls-exporter.yml > build/config.yml && \
		grep -q '^listen: "127.0.0.1:9847"' build/config.yml && \
		install -m 0644 build/config.yml $(DEST)$(CONFDIR)/config.yml; }
	if [ -f README.md ]; then install -m 0644 README.md $(TARGET)/README.md; fi
	if [ -z "$(DESTDIR)" ] && command -v systemd-sysusers >/dev/null; then \
		systemd-sysusers $(SYSUSERSDIR)/apigee-tls-exporter.conf; fi
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
