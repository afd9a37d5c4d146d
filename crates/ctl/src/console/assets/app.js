// placeholder: part C writes the console script
