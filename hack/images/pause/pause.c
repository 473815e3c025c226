/*
 * pause: the pod sandbox process for the Vexa local cluster.
 *
 * Every pod gets one sandbox container whose only job is to hold the pod's
 * namespaces open. This program does nothing else: it sleeps in pause(),
 * exits cleanly on SIGINT/SIGTERM, and reaps any zombie that ends up
 * re-parented to it (it is PID 1 of the pod when the PID namespace is shared).
 *
 * Built by hack/cluster with `gcc -static -Os` and imported as localhost/pause:vexa.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_terminate(int sig)
{
	(void)sig;
	_exit(0);
}

static void on_child(int sig)
{
	int saved = errno;
	(void)sig;
	/* Reap every child that has exited; never block. */
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	errno = saved;
}

static void install(int sig, void (*handler)(int))
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = handler;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = (sig == SIGCHLD) ? SA_NOCLDSTOP | SA_RESTART : 0;
	if (sigaction(sig, &sa, NULL) < 0) {
		perror("pause: sigaction");
		exit(1);
	}
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "-v") == 0) {
		puts("pause (vexa) 1.0");
		return 0;
	}
	if (getpid() != 1)
		fprintf(stderr, "pause: warning: not running as PID 1\n");

	install(SIGINT, on_terminate);
	install(SIGTERM, on_terminate);
	install(SIGCHLD, on_child);

	for (;;)
		pause();
	/* not reached */
	return 42;
}
