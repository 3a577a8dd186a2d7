/* The floor: the least a checker can do for the same checks, in C.
 *
 *   floor N PORT INTERVAL WARMUP DURATION TLS      (TLS: 0 plain, 1 full handshakes, 2 resumed)
 *
 * One epoll loop; real server i is 127.1.(i/250).(i%250+1):PORT; its checks start at
 * start + k*INTERVAL/N (the same schedule as pymon's, spread over one interval). Each
 * check: a fresh non-blocking connect, (a TLS handshake, no certificate verification,
 * resuming the server's last session with TLS=2), one HTTP/1.0 GET, read to the end of
 * the head, status 200 or not, close. No schedule object, state, log or timeout: what any
 * checker pays, mostly the kernel's TCP work and OpenSSL's handshake. Prints one JSON
 * line: checks done and failed in the window and the process's CPU in it.
 *
 * Built by bench/throughput.py: cc -O2 -o floor floor.c -lssl -lcrypto
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char REQ[] = "GET / HTTP/1.0\r\nHost: bench\r\nUser-Agent: pymon-bench\r\nAccept: */*\r\nConnection: close\r\n\r\n";

struct conn {
	int fd, server, phase; /* 0 connect, 1 tls, 2 response */
	SSL *ssl;
	size_t got;
	char buf[4096];
};

static double now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu(struct rusage *r) {
	getrusage(RUSAGE_SELF, r);
	return r->ru_utime.tv_sec + r->ru_utime.tv_usec / 1e6 + r->ru_stime.tv_sec + r->ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv) {
	if (argc != 7) {
		fprintf(stderr, "usage: floor N PORT INTERVAL WARMUP DURATION TLS\n");
		return 2;
	}
	int n = atoi(argv[1]), port = atoi(argv[2]), tls = atoi(argv[6]);
	double interval = atof(argv[3]), warmup = atof(argv[4]), duration = atof(argv[5]);
	struct sockaddr_in *addrs = calloc(n, sizeof *addrs);
	SSL_SESSION **sessions = calloc(n, sizeof *sessions);
	for (int i = 0; i < n; i++) {
		addrs[i].sin_family = AF_INET;
		addrs[i].sin_port = htons(port);
		char a[32];
		snprintf(a, sizeof a, "127.1.%d.%d", i / 250, i % 250 + 1);
		inet_pton(AF_INET, a, &addrs[i].sin_addr);
	}
	SSL_CTX *ctx = NULL;
	if (tls) {
		ctx = SSL_CTX_new(TLS_client_method());
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF); /* SSL_set_session needs no cache */
	}
	int ep = epoll_create1(0);
	struct epoll_event evs[1024];
	double start = now(), t0 = start + warmup, t1 = t0 + duration;
	long k = 0, done = 0, failed = 0, resumed = 0;
	int measuring = 0;
	struct rusage r0, r1;
	double c0 = 0;
	for (;;) {
		double t = now();
		if (!measuring && t >= t0) {
			measuring = 1;
			c0 = cpu(&r0);
			done = failed = resumed = 0;
		}
		if (t >= t1)
			break;
		while (start + k * interval / n <= t) {
			struct conn *c = calloc(1, sizeof *c);
			c->server = k % n;
			c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
			connect(c->fd, (struct sockaddr *)&addrs[c->server], sizeof addrs[0]);
			struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
			epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
			k++;
		}
		/* rounded up to the next ms, as Python's epoll.poll does: rounded down, the loop
		 * would spin through the last ms before every start */
		double left = start + k * interval / n - now();
		int m = epoll_wait(ep, evs, 1024, left > 0 ? (int)(left * 1000) + 1 : 0);
		for (int e = 0; e < m; e++) {
			struct conn *c = evs[e].data.ptr;
			int ok = -1; /* -1: not over yet */
			if (c->phase == 0) {
				int err = 0;
				socklen_t len = sizeof err;
				getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
				if (err)
					ok = 0;
				else if (tls) {
					c->ssl = SSL_new(ctx);
					SSL_set_fd(c->ssl, c->fd);
					SSL_set_connect_state(c->ssl);
					if (tls == 2 && sessions[c->server])
						SSL_set_session(c->ssl, sessions[c->server]);
					c->phase = 1;
				} else {
					send(c->fd, REQ, sizeof REQ - 1, 0);
					c->phase = 2;
					struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
					epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
					continue;
				}
			}
			if (c->phase == 1) {
				int rc = SSL_do_handshake(c->ssl);
				if (rc == 1) {
					resumed += SSL_session_reused(c->ssl);
					SSL_write(c->ssl, REQ, sizeof REQ - 1);
					c->phase = 2;
				} else {
					int why = SSL_get_error(c->ssl, rc);
					if (why == SSL_ERROR_WANT_READ || why == SSL_ERROR_WANT_WRITE) {
						struct epoll_event ev = {.events = why == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT, .data.ptr = c};
						epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
						continue;
					}
					ok = 0;
				}
			}
			if (c->phase == 2 && ok < 0) {
				for (;;) {
					int got = tls ? SSL_read(c->ssl, c->buf + c->got, sizeof c->buf - 1 - c->got)
						      : (int)recv(c->fd, c->buf + c->got, sizeof c->buf - 1 - c->got, 0);
					if (got <= 0) {
						int again = tls ? SSL_get_error(c->ssl, got) == SSL_ERROR_WANT_READ
								: got < 0 && errno == EAGAIN;
						if (again) {
							struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
							epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
						} else
							ok = 0;
						break;
					}
					c->got += got;
					c->buf[c->got] = 0;
					if (strstr(c->buf, "\r\n\r\n") || c->got >= sizeof c->buf - 1) {
						ok = strncmp(c->buf, "HTTP/1.1 200", 12) == 0;
						break;
					}
				}
			}
			if (ok < 0)
				continue;
			done += ok;
			failed += !ok;
			if (c->ssl) {
				if (tls == 2 && ok) {
					SSL_SESSION *s = SSL_get1_session(c->ssl);
					if (sessions[c->server])
						SSL_SESSION_free(sessions[c->server]);
					sessions[c->server] = s;
				}
				/* freed without a shutdown, OpenSSL would mark the session not resumable */
				SSL_set_shutdown(c->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
				SSL_free(c->ssl);
			}
			close(c->fd);
			free(c);
		}
	}
	double c1 = cpu(&r1);
	double sys = r1.ru_stime.tv_sec + r1.ru_stime.tv_usec / 1e6 - r0.ru_stime.tv_sec - r0.ru_stime.tv_usec / 1e6;
	printf("{\"done\": %ld, \"failed\": %ld, \"resumed\": %ld, \"cpu_s\": %.4f, \"sys_s\": %.4f}\n", done, failed,
	       resumed, c1 - c0, sys);
	return 0;
}
