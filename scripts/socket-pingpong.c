/* The floor under a pin by request (DESIGN §9.5): a round trip of one small message between
 * two processes over a SOCK_SEQPACKET socket pair, what a request to `devmap serve` and its
 * reply cost at the least. Build and run: cc -O2 scripts/socket-pingpong.c -o /tmp/pingpong
 * && /tmp/pingpong (prints p50 and p99 of 20000 round trips). */
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>
#include <time.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e9+t.tv_nsec;}
int cmp(const void*a,const void*b){double x=*(double*)a,y=*(double*)b;return x<y?-1:x>y;}
int main(){int sv[2];socketpair(AF_UNIX,SOCK_SEQPACKET,0,sv);
if(fork()==0){char b[64];for(;;){int n=read(sv[1],b,64);if(n<=0)_exit(0);write(sv[1],b,n);}}
char b[64]={0};int N=20000;double*d=malloc(N*sizeof(double));
for(int i=0;i<N;i++){double t=now();write(sv[0],b,48);read(sv[0],b,64);d[i]=now()-t;}
qsort(d,N,sizeof(double),cmp);printf("p50 %.1f us p99 %.1f us\n",d[N/2]/1e3,d[N*99/100]/1e3);}
