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
# make install [DESTDIR=/staging] [PREFIX=/opt/apigee-tls-exporter]
#   A venv at $(PREFIX) with the package and its dependencies, installed offline from the
#   wheelhouse that `make dist` builds (the same path as the documented offline install); the
#   systemd unit, the sysusers file and, unless one exists, the default config.
# make dist
#   dist/wheelhouse: wheels of the package and every dependency, for this machine's Python and
#   architecture; dist/apigee-tls-exporter.pyz: a single-file zipapp (see packaging/pyz_main.py).
PREFIX      ?= /opt/apigee-tls-exporter
DESTDIR     ?=
UNITDIR     ?= /etc/systemd/system
SYSUSERSDIR ?= /etc/sysusers.d
CONFDIR     ?= /etc/apigee-tls-exporter
WHEELHOUSE  := dist/wheelhouse
PYZ         := dist/apigee-tls-exporter.pyz
PKG_SOURCES := pyproject.toml $(wildcard daemon/*.py)
DEST        := $(if $(DESTDIR),$(abspath $(DESTDIR)))
TARGET      := $(DEST)$(PREFIX)

.PHONY: install dist wheelhouse pyz

dist: wheelhouse pyz

wheelhouse: $(WHEELHOUSE)/.built

$(WHEELHOUSE)/.built: $(PKG_SOURCES) | $(STAMP)
	rm -f $(WHEELHOUSE)/apigee_tls_exporter-*.whl
	$(BIN)/pip wheel --quiet --wheel-dir $(WHEELHOUSE) .
	touch $@

pyz: $(PYZ)

$(PYZ): $(WHEELHOUSE)/.built packaging/pyz_main.py
	rm -rf build/pyz && mkdir -p build/pyz/_native
	$(BIN)/pip install --quiet --no-compile --no-index --find-links $(WHEELHOUSE) \
		--target build/pyz apigee-tls-exporter
	rm -rf build/pyz/bin
	# Packages holding compiled modules go to _native/, which the bootstrap extracts at start.
	cd build/pyz && for entry in *; do \
		[ "$$entry" = _native ] && continue; \
		if [ -n "$$(find "$$entry" -name '*.so' -print -quit)" ]; then mv "$$entry" _native/; fi; \
	done
	$(BIN)/python -c 'import platform, sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]} {platform.machine()}")' \
		> build/pyz/_native/BUILD
	cp packaging/pyz_main.py build/pyz/__main__.py
	find build/pyz -name __pycache__ -prune -exec rm -rf {} +
	$(BIN)/python -m zipapp build/pyz --output $@ --python '/usr/bin/env python3' --compress

install: wheelhouse
	@test -f config/apigee-tls-exporter.yml || \
		{ echo "make install: config/apigee-tls-exporter.yml is missing" >&2; exit 1; }
	$(PYTHON) -m venv $(TARGET)
	$(TARGET)/bin/python3 -m pip install --quiet --no-index --find-links $(WHEELHOUSE) \
		--force-reinstall apigee-tls-exporter
	# A launcher that finds the venv's Python next to itself, so the tree works where it is
	# staged (DESTDIR) and where it ends up; other scripts point at $(PREFIX).
	printf '%s\n' '#!/bin/sh' \
		'exec "$$(dirname -- "$$(readlink -f -- "$$0")")/python3" -m apigee_tls_exporter "$$@"' \
		> $(TARGET)/bin/apigee-tls-exporter
	chmod 0755 $(TARGET)/bin/apigee-tls-exporter
	if [ -n "$(DESTDIR)" ]; then \
		find $(TARGET)/bin -maxdepth 1 -type f -exec grep -Il '$(TARGET)' {} + \
			| xargs -r sed -i 's|$(TARGET)|$(PREFIX)|g'; \
		sed -i 's|$(TARGET)|$(PREFIX)|g' $(TARGET)/pyvenv.cfg; \
	fi
	sed -e 's|/opt/apigee-tls-exporter|$(PREFIX)|g' -e 's|/etc/apigee-tls-exporter|$(CONFDIR)|g' \
		systemd/apigee-tls-exporter.service > apigee-tls-exporter.service.tmp
	install -D -m 0644 apigee-tls-exporter.service.tmp \
		$(DEST)$(UNITDIR)/apigee-tls-exporter.service
	rm -f apigee-tls-exporter.service.tmp
	install -D -m 0644 systemd/apigee-tls-exporter.sysusers.conf \
		$(DEST)$(SYSUSERSDIR)/apigee-tls-exporter.conf
	install -d -m 0755 $(DEST)$(CONFDIR)
	test -e $(DEST)$(CONFDIR)/config.yml || \
		install -m 0644 config/apigee-tls-exporter.yml $(DEST)$(CONFDIR)/config.yml
	if [ -f README.md ]; then install -m 0644 README.md $(TARGET)/README.md; fi
	# On the real system (no DESTDIR): create the user now; systemd picks up the unit on reload.
	if [ -z "$(DESTDIR)" ] && command -v systemd-sysusers >/dev/null; then \
		systemd-sysusers $(SYSUSERSDIR)/apigee-tls-exporter.conf; fi
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
