# ngx_http_dqe_oauth_module
#
#   make          build the module against Debian's nginx-dev
#   make run      build, start the mock DQE server and nginx on loopback
#   make stop     stop what "make run" started
#   make test     build and run the Test::Nginx suite in t/
#   make bench    the warm path against a static-header baseline (ratios)
#   make asan     the suite with the module built with AddressSanitizer
#   make static   nginx 1.22.1 from Debian's source with the module built in
#   make test-static  the suite against that binary
#   make fuzz     libFuzzer targets, FUZZ_SECONDS each (default 60)
#   make valgrind every token path under valgrind's memcheck
#   make mutate   each mutant of mutate/mutants.txt against its test files:
#                 every one must be caught (MUTANTS=id,... for some)
#   make mutate-quick  one mutant per class (mutate/quick.txt), in CI
#   make check-m32  the module compiled for a 32-bit nginx (-m32, -Werror)
#   make check-build NGINX_SOURCE=dir
#                 dynamic and static builds against that nginx source tree
#                 (or tarball), and the suite against each
#   make deb      the Debian package libnginx-mod-http-dqe-oauth (build/deb)
#   make test-deb installs it into the system nginx, uses it, purges it;
#                 upgrades to it from the previous release's package
#   make deps     install the Debian packages needed (as root)

SHELL      := /bin/bash

NGINX_SRC  ?= /usr/share/nginx/src
NGINX      ?= /usr/sbin/nginx
BUILD      := $(CURDIR)/build
OBJS       := $(BUILD)/objs
MODULE     := $(OBJS)/ngx_http_dqe_oauth_module.so
CC_OPT     ?= -g -O2 -Wall -Wextra -Werror -fstack-protector-strong \
              -D_FORTIFY_SOURCE=2 -fPIC
LD_OPT     ?= -Wl,-z,relro -Wl,-z,now -fPIC

DEPS       := nginx nginx-dev gcc make openssl curl python3 \
              libtest-base-perl libtest-longstring-perl liblist-moreutils-perl \
              libtext-diff-perl liburi-perl libhttp-message-perl \
              libipc-run-perl wrk libnginx-mod-http-lua lua-resty-core \
              libpcre3-dev libssl-dev zlib1g-dev patch xz-utils \
              nghttp2-client clang libclang-rt-14-dev time valgrind \
              debhelper dpkg-dev python3-prometheus-client prometheus \
              strace gcc-multilib libcjson-dev

SOURCES    := config $(wildcard src/*.c src/*.h)

.PHONY: all deps run stop test bench asan static test-static fuzz valgrind \
        mutate mutate-quick deb test-deb check-build check-m32 clean

all: $(MODULE)

deps:
	@missing=$$(for p in $(DEPS); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null \
	        | grep -q 'install ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:" $$missing; \
	    apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	        --no-install-recommends $$missing >/dev/null; \
	else \
	    echo "missing packages; run as root:"; \
	    echo "  apt-get install $$missing"; exit 1; \
	fi

$(OBJS)/Makefile: config
	rm -rf $(BUILD)/nginx-src
	mkdir -p $(BUILD)
	cp -r $(NGINX_SRC) $(BUILD)/nginx-src
	cd $(BUILD)/nginx-src && source ./conf_flags && \
	    ./configure "$${NGX_CONF_FLAGS[@]}" \
	        --with-cc-opt="$(CC_OPT)" --with-ld-opt="$(LD_OPT)" \
	        --add-dynamic-module=$(CURDIR) --builddir=$(OBJS) >/dev/null

$(MODULE): $(OBJS)/Makefile $(SOURCES)
	$(MAKE) -C $(BUILD)/nginx-src -f $(OBJS)/Makefile modules
	@echo "built $(MODULE)"

run: deps $(MODULE)
	@bash t/run.sh start

stop:
	@bash t/run.sh stop

test: deps $(MODULE)
	bash t/unit/run.sh
	TEST_NGINX_BINARY=$(NGINX) DQE_MODULE=$(MODULE) \
	    bash t/prove.sh

# nginx with the module compiled in (--add-module), from Debian's source
# of nginx (apt-get source: needs a deb-src entry, see the README)
STATIC     := $(BUILD)/static

static: $(STATIC)/nginx

$(STATIC)/nginx: $(SOURCES)
	bash t/build.sh static $(STATIC)

test-static: deps $(STATIC)/nginx
	TEST_NGINX_BINARY=$(STATIC)/nginx DQE_MODULE=static bash t/prove.sh

CHECK      := $(BUILD)/check

# 32-bit platforms: ngx_uint_t, ngx_msec_t and pointers 32 bits wide (the
# code path that widens ngx_current_msec); nginx's headers of Debian's
# nginx-dev, the modules that need 32-bit libraries left out; compiled,
# not run (t/unit/time.c runs the time arithmetic with -m32)
M32        := $(BUILD)/m32

# cJSON for i386 (Multi-Arch: same) beside the native one, as root
M32_CJSON  := /usr/lib/i386-linux-gnu/libcjson.so

check-m32: deps $(M32_CJSON)
	rm -rf $(M32) && mkdir -p $(M32)
	cp -r $(NGINX_SRC) $(M32)/src
	cd $(M32)/src && ./configure --with-cc-opt="-m32 -Werror" \
	    --with-ld-opt=-m32 --without-http_rewrite_module \
	    --without-http_gzip_module --without-pcre \
	    --add-dynamic-module=$(CURDIR) --builddir=$(M32)/objs >/dev/null
	$(MAKE) -C $(M32)/src -f $(M32)/objs/Makefile modules >/dev/null
	@readelf -h $(M32)/objs/ngx_http_dqe_oauth_module.so | grep -q ELF32 \
	    && echo "built $(M32)/objs/ngx_http_dqe_oauth_module.so (ELF32)"

$(M32_CJSON):
	@test "$$(id -u)" = 0 || { echo "as root: dpkg --add-architecture" \
	    "i386 && apt-get update && apt-get install libcjson-dev:i386"; \
	    exit 1; }
	dpkg --add-architecture i386
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends libcjson-dev:i386 >/dev/null

check-build: deps
	@test -n "$(NGINX_SOURCE)" || { echo "give NGINX_SOURCE=dir"; exit 1; }
	bash t/build.sh dynamic $(NGINX_SOURCE) $(CHECK)/dynamic
	bash t/unit/run.sh
	TEST_NGINX_BINARY=$(CHECK)/dynamic/nginx \
	    DQE_MODULE=$(CHECK)/dynamic/ngx_http_dqe_oauth_module.so \
	    bash t/prove.sh
	bash t/build.sh static $(NGINX_SOURCE) $(CHECK)/static
	TEST_NGINX_BINARY=$(CHECK)/static/nginx DQE_MODULE=static \
	    bash t/prove.sh

# with Debian's tooling (dh-sequence-nginx, as Debian's libnginx-mod-*),
# from a copy of the tree, so that the build leaves it as it is
DEB        := $(BUILD)/deb

deb: deps
	rm -rf $(DEB) && mkdir -p $(DEB)/src
	tar --exclude=./build --exclude=./.git --exclude='./t/servroot*' \
	    --exclude=./run -cf - . | tar xf - -C $(DEB)/src
	cd $(DEB)/src && dpkg-buildpackage -b -us -uc >../build.log 2>&1 \
	    || { tail -30 ../build.log; exit 1; }
	@ls $(DEB)/*.deb

# the previous release's package too (t/deb-previous): test-deb upgrades
# from it
test-deb: deb
	bash t/deb-previous.sh
	prove -I t/lib t/deb.pl

valgrind: deps $(MODULE)
	TEST_NGINX_BINARY=$(NGINX) DQE_MODULE=$(MODULE) \
	    prove -I t/lib t/valgrind.pl

# in a copy of the tree (build/mutate), so that the tree is left as it is
mutate: deps
	TEST_NGINX_BINARY=$(NGINX) bash mutate/run.sh

# one mutant per class (mutate/quick.txt), about 10 minutes: CI runs it
mutate-quick: deps
	TEST_NGINX_BINARY=$(NGINX) \
	    MUTANTS=$$(grep -v '^#' mutate/quick.txt | paste -sd, -) \
	    bash mutate/run.sh

FUZZ_SECONDS ?= 60

fuzz: deps $(MODULE)
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash fuzz/run.sh

bench: deps $(MODULE)
	@bash bench/run.sh

# the module instrumented, Debian's nginx not: libasan is preloaded into
# nginx alone (a wrapper that execs it), not into the test harness (the
# mock DQE, Python, hung under it); leak checks are off, nginx core frees
# some memory only at exit
ASAN       := $(BUILD)/asan
ASAN_LIB   ?= $(shell gcc -print-file-name=libasan.so)

asan: deps
	$(MAKE) BUILD=$(ASAN) OBJS=$(ASAN)/objs \
	    MODULE=$(ASAN)/objs/ngx_http_dqe_oauth_module.so \
	    CC_OPT="-g -O1 -fno-omit-frame-pointer -fsanitize=address \
	            -Wall -Wextra -Werror -fPIC" \
	    LD_OPT="-fsanitize=address -fPIC"
	rm -rf $(ASAN)/reports && mkdir -p $(ASAN)/reports
	printf '#!/bin/sh\nLD_PRELOAD=%s ASAN_OPTIONS=%s exec %s "$$@"\n' \
	    $(ASAN_LIB) detect_leaks=0:log_path=$(ASAN)/reports/asan \
	    $(NGINX) > $(ASAN)/nginx
	chmod +x $(ASAN)/nginx
	TEST_NGINX_BINARY=$(ASAN)/nginx \
	    DQE_MODULE=$(ASAN)/objs/ngx_http_dqe_oauth_module.so \
	    bash t/prove.sh
	@if grep -l "AddressSanitizer" $(ASAN)/reports/* 2>/dev/null; then \
	    echo "AddressSanitizer reports above"; exit 1; \
	else echo "no AddressSanitizer report"; fi

clean:
	rm -rf $(BUILD) t/servroot* run
