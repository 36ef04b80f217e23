import ArgumentParser

ChromaBench.main()
