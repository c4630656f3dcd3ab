import NetdiskFS

await NetdiskCommand.main()
