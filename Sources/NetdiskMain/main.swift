import NetdiskFS

await CommandLineDriver.main()
