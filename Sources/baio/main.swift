import BufferedAIO
print("baio")
