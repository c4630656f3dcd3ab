/* Shows how much RSS one touch of a file mapping adds (kernel fault-around), for bench/MEMORY.md.
 * cc -O1 -o /tmp/fa bench/faultaround.c && /tmp/fa /opt/swift/usr/lib/swift/linux/libswiftCore.so [random] */
#include <stdio.h>
#include <sys/mman.h>
#include <fcntl.h>
#include <string.h>
#include <stdlib.h>
#include <unistd.h>
static long rss(void *a){FILE*f=fopen("/proc/self/smaps","r");char l[512];int in=0;long r=-1;char key[32];snprintf(key,32,"%lx-",(unsigned long)a);
while(fgets(l,512,f)){ if(strncmp(l,key,strlen(key))==0) in=1; else if(in && strncmp(l,"Rss:",4)==0){r=atol(l+4);break;}} fclose(f);return r;}
int main(int c,char**v){int fd=open(v[1],O_RDONLY);long sz=lseek(fd,0,SEEK_END);char*p=mmap(0,sz,PROT_READ,MAP_PRIVATE,fd,0);
if(c>2) madvise(p,sz,MADV_RANDOM);
volatile char x; for(int i=0;i<4;i++){ x=p[(long)i*1048576+12345]; printf("after touch %d: %ld kB\n",i+1,rss(p)); } return 0;}
